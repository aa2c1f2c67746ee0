from platform_client import Client

client = Client()  # PLATFORM_SERVER / PLATFORM_TOKEN, else the CLI's config
jobs = [client.create_job("demo", "yolo11n", "coco128", config={"epochs": 5, "lr": lr})
        for lr in (0.1, 0.03, 0.01, 0.003, 0.001)]
done = [client.wait(job, timeout=3600) for job in jobs]
score = {j.id: max(p.metrics.get("mAP50", 0) for p in client.metrics(j)) for j in done}
best = max(done, key=lambda j: score[j.id])
print(f"best: job #{best.number} ({best.status}) lr={best.config['lr']} mAP50={score[best.id]:.3f}")
