//! A real S3 server for tests: s3s-fs (an S3 implementation over a
//! directory that checks SigV4 signatures, presigned URLs included) on
//! 127.0.0.1, inside the test process on its own runtime thread so blocking
//! test code (CLI runs, daemon start-up) never stalls it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// Access key the test server accepts.
pub const ACCESS_KEY: &str = "platform-test-access-key";
/// Secret key the test server accepts; tests check it never leaks.
pub const SECRET_KEY: &str = "platform-test-secret-Zq7RxK2w9Lm4";
/// The bucket every test uses.
pub const BUCKET: &str = "vision-platform";

/// A running S3 server; stops when dropped.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Starts a server with the bucket [`BUCKET`] created.
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join(BUCKET)).expect("create bucket");
        let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let fs_root = root.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("S3 runtime");
            rt.block_on(serve(fs_root, addr_tx, stop_rx));
        });
        let addr = addr_rx.recv().expect("S3 server address");
        S3Server {
            endpoint: format!("http://{addr}"),
            _dir: dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The daemon environment that selects this server.
    pub fn envs(&self) -> Vec<(String, String)> {
        [
            ("S3_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("BUCKET_NAME", BUCKET),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Stops serving (connections are refused afterwards).
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    root: PathBuf,
    addr_tx: mpsc::Sender<SocketAddr>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs root");
    let service = {
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        b.build()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind S3 server");
    addr_tx
        .send(listener.local_addr().expect("S3 address"))
        .expect("report S3 address");
    let http = ConnBuilder::new(TokioExecutor::new());
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let socket = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        conns.spawn(async move {
            let _ = conn.await;
        });
    }
    // Dropping the listener and aborting connections makes the endpoint unreachable.
    conns.abort_all();
}
