//! The metrics endpoint: a deliberately tiny HTTP/1.x server. `GET /metrics` (or `HEAD`)
//! answers 200 with the exposition text; another path is 404, another method 405, a
//! malformed request line 400. Every response closes the connection.
//!
//! A scraper is trusted no more than an initiator: the request head is read into a fixed
//! buffer ([`HttpLimits::max_head`], 8 KiB; more is 431 and the connection is closed), the
//! whole exchange is bounded by [`HttpLimits::timeout`], and connections are served one at
//! a time, so a bad client holds at most one buffer for at most one timeout and cannot pile
//! up tasks. Prometheus scrapes once every several seconds; queueing behind a slow client
//! for a few seconds is acceptable, a bigger server (or a hyper dependency) is not needed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::text::CONTENT_TYPE;

/// Bounds on one client.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request head (request line and headers) accepted.
    pub max_head: usize,
    /// Longest a client may take to send its request and take the response.
    pub timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head: 8 * 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Serves `listener` until `shutdown` turns true; `render` produces the body of each scrape.
pub async fn serve<F>(
    listener: TcpListener,
    render: F,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    F: Fn() -> String,
{
    loop {
        let sock = tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, _)) => sock,
                Err(e) => {
                    warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        tokio::select! {
            r = tokio::time::timeout(limits.timeout, handle(sock, &render, limits.max_head)) => {
                if r.is_err() {
                    debug!("metrics: client too slow, connection closed");
                }
            }
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Completes once shutdown is signalled (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here, not in the caller's select.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn handle<F: Fn() -> String>(mut sock: TcpStream, render: &F, max_head: usize) {
    let mut buf = vec![0u8; max_head];
    let mut len = 0;
    let reply = loop {
        if len == buf.len() {
            break Reply::status(431, "Request Header Fields Too Large");
        }
        let n = match sock.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        len += n;
        if let Some(head) = complete_head(&buf[..len]) {
            break route(head, render);
        }
    };
    let _ = sock.write_all(&reply.encode()).await;
    let _ = sock.shutdown().await;
}

/// The request head when it is complete (ends with an empty line).
fn complete_head(buf: &[u8]) -> Option<&[u8]> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))?;
    buf.get(..end)
}

/// A response to send.
#[derive(Debug)]
struct Reply {
    code: u16,
    reason: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
    /// HEAD: the headers of the body without it.
    head_only: bool,
}

impl Reply {
    fn status(code: u16, reason: &'static str) -> Reply {
        Reply {
            code,
            reason,
            headers: vec![("Content-Type", "text/plain; charset=utf-8")],
            body: format!("{reason}\n"),
            head_only: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut s = format!("HTTP/1.1 {} {}\r\n", self.code, self.reason);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut out = s.into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Decides the response to a complete request head.
fn route<F: Fn() -> String>(head: &[u8], render: &F) -> Reply {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .unwrap_or("")
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Reply::status(400, "Bad Request");
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Reply::status(400, "Bad Request");
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return Reply::status(404, "Not Found");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut r = Reply::status(405, "Method Not Allowed");
            r.headers.push(("Allow", "GET, HEAD"));
            return r;
        }
    };
    Reply {
        code: 200,
        reason: "OK",
        headers: vec![("Content-Type", CONTENT_TYPE)],
        body: render(),
        head_only,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn render() -> String {
        "# TYPE up gauge\nup 1\n".to_string()
    }

    async fn start(limits: HttpLimits) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, render, limits, rx));
        (addr, tx)
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn routes() {
        let r = route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &render);
        assert_eq!(r.code, 200);
        assert_eq!(
            r.headers,
            vec![("Content-Type", "text/plain; version=0.0.4")]
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\n\n", &render).code, 200);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n", &render).code, 404);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n", &render).code, 404);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n", &render).code, 405);
        assert_eq!(route(b"GET /metrics\r\n\r\n", &render).code, 400);
        assert_eq!(route(b"GET /metrics SPDY/3 x\r\n\r\n", &render).code, 400);
        assert_eq!(route(b"\xff\xfe\r\n\r\n", &render).code, 400);
        let head = route(b"HEAD /metrics HTTP/1.1\r\n\r\n", &render).encode();
        assert!(String::from_utf8(head).unwrap().ends_with("\r\n\r\n"));
    }

    #[tokio::test]
    async fn good_get_returns_the_text_and_closes() {
        let (addr, _stop) = start(HttpLimits::default()).await;
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"));
        assert!(r.contains("\r\nContent-Length: 21\r\n"));
        assert!(r.contains("\r\nConnection: close\r\n"));
        assert!(r.ends_with("\r\n\r\n# TYPE up gauge\nup 1\n"));
    }

    #[tokio::test]
    async fn wrong_path_and_method() {
        let (addr, _stop) = start(HttpLimits::default()).await;
        let r = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        let r = exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("\r\nAllow: GET, HEAD\r\n"));
    }

    #[tokio::test]
    async fn oversized_request_is_refused() {
        let (addr, _stop) = start(HttpLimits::default()).await;
        let mut req = b"GET /metrics HTTP/1.1\r\n".to_vec();
        req.extend(vec![b'a'; 9000]);
        let r = exchange(addr, &req).await;
        assert!(
            r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{r}"
        );
        // The server is free for the next client.
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[tokio::test]
    async fn slow_client_is_dropped_and_the_next_one_served() {
        let limits = HttpLimits {
            timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /metr").await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without a response");
        assert!(started.elapsed() >= Duration::from_millis(250));
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[tokio::test]
    async fn stops_at_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, render, HttpLimits::default(), rx));
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
    }
}
