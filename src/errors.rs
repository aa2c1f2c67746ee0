//! Error text helpers shared by the client, the object store and the
//! Kubernetes client: they turn an error chain into one short, readable
//! phrase for a person at a terminal or in a log line.

/// The innermost error message, lowercased, e.g. "connection refused".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    if let Some(io) = cur.downcast_ref::<std::io::Error>() {
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::TimedOut => "timed out".into(),
            _ => strip_os_error(&io.to_string()),
        };
    }
    let text = cur.to_string();
    if text.is_empty() {
        e.to_string()
    } else {
        strip_os_error(&text)
    }
}

/// `s` without the OS error number std appends (" (os error 111)"), lowercased.
pub fn strip_os_error(s: &str) -> String {
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_cause_without_the_os_error_number() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(root_cause(&refused), "connection refused");
        let wrapped = std::io::Error::other(std::io::Error::other("Broken Pipe (os error 32)"));
        assert_eq!(root_cause(&wrapped), "broken pipe");
        assert_eq!(strip_os_error("No such file"), "no such file");
    }
}
