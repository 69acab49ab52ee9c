//! A bare HTTP/1.1 server on loopback for tests that need exact control of the bytes: each
//! connection's request path goes to `reply`, whose answer (status line, headers, body) is
//! written back as it is.
#![allow(clippy::disallowed_methods)] // a test server runs its own tasks

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves until the test's runtime ends; answers each request with `reply(path)`.
pub async fn serve<F, R>(reply: F) -> SocketAddr
where
    F: Fn(String) -> R + Send + Sync + 'static,
    R: Future<Output = String> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake HTTP server");
    let addr = listener.local_addr().expect("its address");
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let Ok(n) = tcp.read(&mut buffer).await else { return };
                let request = String::from_utf8_lossy(&buffer[..n]).to_string();
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let answer = reply(path).await;
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// A complete response with `status` (`200 OK`), a content type and `body`.
pub fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A redirect to `location`.
pub fn redirect(location: &str) -> String {
    format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}
