//! The admin endpoint's defences against clients that hold connections: at most
//! `max_connections` at once (one more is closed as soon as it is accepted),
//! and every connection must finish each request's header within
//! `header_read_timeout` of its start (or of the previous request's header), and
//! may not leave a response unread for longer than that. 2000 connections that
//! sent half a header were held open indefinitely.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

pub struct GuardedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl GuardedListener {
    pub fn new(listener: TcpListener, max_connections: usize, timeout: Duration) -> Self {
        GuardedListener {
            listener,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            timeout,
        }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, SocketAddr) {
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum does.
                    tracing::debug!(error = %e, "api: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // At the cap, a new connection is closed at once rather than queued:
            // queued behind hundreds of slow clients, a scrape would wait for
            // every one of them to time out.
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => return (GuardedStream::new(stream, permit, self.timeout), addr),
                Err(_) => {
                    tracing::debug!(%addr, "api: connection refused, at max_connections");
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection that fails its reads once a header takes too long, and its
/// writes once the client stops reading for too long.
pub struct GuardedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    timeout: Duration,
    /// When the header being read must be complete.
    header_deadline: Pin<Box<Sleep>>,
    /// The last bytes read, to find a header's end (`\r\n\r\n`) across reads.
    tail: u32,
    /// Set while a write waits on the client.
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl GuardedStream {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, timeout: Duration) -> Self {
        GuardedStream {
            stream,
            _permit: permit,
            timeout,
            header_deadline: Box::pin(tokio::time::sleep(timeout)),
            tail: 0,
            write_deadline: None,
        }
    }

    fn timed_out(what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("api client too slow: {what}"),
        )
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let mut ended = false;
                for &b in &buf.filled()[before..] {
                    this.tail = (this.tail << 8) | u32::from(b);
                    if this.tail == u32::from_be_bytes(*b"\r\n\r\n") {
                        ended = true;
                    }
                }
                if ended {
                    // The next request's header gets the same time, from now.
                    let next = Instant::now() + this.timeout;
                    this.header_deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.header_deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Self::timed_out("no complete header in time"))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Pending => {
                let timeout = this.timeout;
                let deadline = this
                    .write_deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(Self::timed_out("response not read"))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                this.write_deadline = None;
                ready
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::admin::serve;
    use crate::config::ApiLimits as Limits;
    use crate::status::StatusBoard;

    /// Reads until the server closes the connection (or fails it); the bytes.
    async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[tokio::test]
    async fn half_headers_are_cut_off_and_connections_are_capped() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(300),
            max_connections: 2,
        };
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            limits,
            StatusBoard::default(),
        )
        .await
        .unwrap();
        let addr = server.address;
        // Two slow clients take both places, each with half a header.
        let mut slow = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            slow.push(s);
        }
        // A third is turned away at once, not queued.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let _ = third
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let bound = Duration::from_secs(30);
        let refused = tokio::time::timeout(bound, until_closed(&mut third))
            .await
            .expect("the third client was held, not refused");
        assert!(
            refused.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&refused)
        );
        // Once the slow ones are cut off, a client is served.
        let answer = tokio::time::timeout(bound, async {
            loop {
                let mut ok = TcpStream::connect(addr).await.unwrap();
                let _ = ok
                    .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await;
                let answer = until_closed(&mut ok).await;
                if !answer.is_empty() {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("no client was ever served again");
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        for mut s in slow {
            let got = tokio::time::timeout(bound, until_closed(&mut s))
                .await
                .expect("a half header held its connection open");
            // Closed without a response, or with hyper's timeout answer.
            assert!(!got.starts_with(b"HTTP/1.1 200"));
        }
        server.stop();
    }

    #[tokio::test]
    async fn a_trickled_header_is_cut_off_too() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(500),
            max_connections: 4,
        };
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            limits,
            StatusBoard::default(),
        )
        .await
        .unwrap();
        let mut s = TcpStream::connect(server.address).await.unwrap();
        let header =
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut closed = false;
        // One byte every 50 ms: never idle long, yet the header never ends in time.
        for &b in header.iter().cycle().take(400) {
            if s.write_all(&[b]).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut probe = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await
            {
                closed = true;
                break;
            }
        }
        assert!(closed, "a header trickled for 20 s was still being read");
        server.stop();
    }
}
