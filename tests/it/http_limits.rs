//! Issue 9, point 10: the HTTP server under slow and many clients. Raw TCP clients play the
//! slow ones: half-open connections, heads and bodies sent a byte at a time, idle keep-alive
//! connections, a streaming client that stops reading.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    fakes::{openai::OpenAi, Behavior, Fake},
    harness::*,
};

fn addr(gw: &Gateway) -> String {
    gw.base.trim_start_matches("http://").to_owned()
}

/// The test process holds thousands of sockets too: lift its soft open-files limit.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Reads one response's head and its `content-length` body; `None` when the server closed
/// the connection first.
async fn read_response(tcp: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some((head, String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string()))
}

/// Waits until the server closes `tcp` (EOF or reset), reading and discarding what it sends;
/// returns how long that took, or `None` if it stayed open for `limit`.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 16 * 1024];
    tokio::time::timeout(limit, async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

fn livez(gw: &Gateway) -> String {
    format!("GET /livez HTTP/1.1\r\nHost: {}\r\n\r\n", addr(gw))
}

#[tokio::test]
async fn thousands_of_half_open_connections_do_not_stop_a_new_client_and_are_cut_at_the_header_timeout() {
    raise_open_files_limit();
    let gw = Gateway::start_with(Options::default().env("TOKAROO_HEADER_READ_TIMEOUT_SECS", "3")).await;
    let target = addr(&gw);
    // Half send nothing, half stop in the middle of their headers.
    let mut idle = Vec::new();
    for batch in 0..10 {
        let connects = (0..200).map(|i| {
            let target = target.clone();
            async move {
                let mut tcp = TcpStream::connect(&target).await.expect("connect");
                if (batch * 200 + i) % 2 == 1 {
                    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty").await.unwrap();
                }
                tcp
            }
        });
        idle.extend(futures_util::future::join_all(connects).await);
    }
    assert_eq!(idle.len(), 2000);
    let opened = Instant::now();
    // A new client, on a connection of its own, is served at once.
    let fresh = tokaroo_actors::routing::client::client();
    let started = Instant::now();
    let r = fresh.get(gw.url("/livez")).send().await.expect("the new client is served");
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2), "served in {:?}", started.elapsed());
    // And the half-open ones are closed by the server once the header timeout passes: the
    // last one opened, not before its time...
    let last = idle.last_mut().unwrap();
    assert!(closed_within(last, Duration::from_secs(10)).await.is_some(), "the last connection stayed open");
    let cut = opened.elapsed();
    assert!(cut >= Duration::from_millis(2500), "cut before the header timeout: {cut:?}");
    // ...and the others (a sample of them).
    for tcp in idle.iter_mut().step_by(10) {
        let closed = closed_within(tcp, Duration::from_secs(10)).await;
        assert!(closed.is_some(), "a half-open connection stayed open past the header timeout");
    }
    assert_eq!(gw.request(HttpMethod::GET, "/livez", None, None).await.status, 200);
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_at_the_header_timeout() {
    let gw = Gateway::start_with(Options::default().env("TOKAROO_HEADER_READ_TIMEOUT_SECS", "1")).await;
    let mut tcp = TcpStream::connect(addr(&gw)).await.unwrap();
    let started = Instant::now();
    let trickle =
        b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = None;
    for byte in trickle {
        if tcp.write_all(&[*byte]).await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        // The server answers nothing before the head is complete; a read that ends is the cut.
        let mut one = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut one)).await {
            Ok(Ok(0) | Err(_)) => {
                cut = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => panic!("the server answered an incomplete head"),
            Err(_) => {}
        }
    }
    let cut = cut.expect("the slow head was cut");
    assert!(cut >= Duration::from_millis(900) && cut < Duration::from_secs(4), "cut after {cut:?}");
}

#[tokio::test]
async fn a_trickling_body_gets_408_and_the_connection_is_closed() {
    let gw = Gateway::start_with(Options::default().env("TOKAROO_BODY_READ_TIMEOUT_SECS", "1")).await;
    let mut tcp = TcpStream::connect(addr(&gw)).await.unwrap();
    let started = Instant::now();
    let head = format!(
        "POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"name\": \""
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // Then a byte every 200 ms, from a writer of its own while this side waits for the answer.
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), rd.read_to_end(&mut answer)).await;
    let elapsed = started.elapsed();
    writer.abort();
    assert!(read.is_ok(), "the server neither answered nor closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5), "408 after {elapsed:?}");
    // The body never completed, so no key was made.
    let keys = gw.get("/v1/keys", ADMIN_TOKEN).await;
    assert!(!keys.text.contains("\"name\":\"aaa"), "{}", keys.text);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_own_timeout_not_the_header_one() {
    let gw = Gateway::start_with(
        Options::default().env("TOKAROO_HEADER_READ_TIMEOUT_SECS", "1").env("TOKAROO_KEEP_ALIVE_IDLE_SECS", "3"),
    )
    .await;
    let mut tcp = TcpStream::connect(addr(&gw)).await.unwrap();
    tcp.write_all(livez(&gw).as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut tcp).await.expect("first answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Idle for longer than the header timeout, shorter than the idle one: still open.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    tcp.write_all(livez(&gw).as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut tcp).await.expect("the kept-alive connection still serves");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Then idle for good: closed after the idle timeout.
    let closed = closed_within(&mut tcp, Duration::from_secs(10)).await.expect("closed when idle");
    assert!(closed >= Duration::from_millis(2700) && closed < Duration::from_secs(5), "closed after {closed:?}");
}

#[tokio::test]
async fn past_max_connections_a_new_client_waits_and_is_served_once_idle_ones_time_out() {
    let gw = Gateway::start_with(
        Options::default().env("TOKAROO_MAX_CONNECTIONS", "50").env("TOKAROO_HEADER_READ_TIMEOUT_SECS", "2"),
    )
    .await;
    let target = addr(&gw);
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(&target).await.unwrap());
    }
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The 51st connection is not accepted while the 50 are open...
    let mut waiting = TcpStream::connect(&target).await.expect("queued by the kernel");
    waiting.write_all(livez(&gw).as_bytes()).await.unwrap();
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut waiting))
        .await
        .expect("served within the header timeout and then some")
        .expect("an answer, not a reset");
    // ...and is served, not refused, when they time out and free their places.
    assert!(head.starts_with("HTTP/1.1 200"), "{head} {body}");
    let waited = opened.elapsed();
    assert!(waited >= Duration::from_millis(1800), "served after {waited:?}: the cap did not hold");
    for tcp in &mut idle {
        assert!(closed_within(tcp, Duration::from_secs(2)).await.is_some());
    }
}

#[tokio::test]
async fn a_streaming_client_that_stops_reading_is_cut_and_its_stream_settled_once_as_abandoned() {
    // An answer far larger than the socket buffers between the gateway and the client.
    let text: &'static str = Box::leak("lorem ".repeat(150_000).into_boxed_str());
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-stalled").await;
    fake.set(Behavior::TextReporting { text, completion_tokens: 777 });
    let gw = Gateway::start_with(
        Options::default()
            .env("OPENAI_API_KEY", &fake.key)
            .env("TOKAROO_OPENAI_BASE_URL", &format!("{}/v1", fake.root))
            .env("TOKAROO_STREAM_WRITE_TIMEOUT_SECS", "1"),
    )
    .await;
    let (account, session) = gw.create_account("stalled").await;
    let r = gw.post(&format!("/admin/accounts/{account}/credits"), ADMIN_TOKEN, json!({"amount_usd": 50.0})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = gw.post("/v1/keys", &session, json!({"name": "k", "rate_limit_rpm": 100000})).await;
    let key = r.body["key"].as_str().unwrap().to_owned();

    // A small receive buffer, and never a read: the gateway's writes stop making progress.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr(&gw).parse().unwrap()).await.unwrap();
    let body =
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Go on"}]}).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nx-request-id: stalled-reader-1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(40);
    let row: Value = loop {
        if let Some(row) = rows(&gw, &account).await.first() {
            break row.clone();
        }
        assert!(Instant::now() < deadline, "no usage row for the stalled stream; log:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(row["output_tokens"], 777, "the provider's final usage, drained after the cut: {row}");
    assert_eq!(row["streamed"], true);
    assert!(
        gw.log().lines().any(|l| l.contains("settled as abandoned") && l.contains("stalled-reader-1")),
        "the stream was settled as abandoned: {}",
        gw.log()
    );
    // The server closed the connection (what it had buffered still arrives first).
    assert!(closed_within(&mut tcp, Duration::from_secs(10)).await.is_some(), "the stalled connection was dropped");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rows(&gw, &account).await.len(), 1, "exactly one row");
}

async fn rows(gw: &Gateway, account: &str) -> Vec<Value> {
    let r = gw.get(&format!("/admin/usage?account_id={account}&limit=1000"), ADMIN_TOKEN).await;
    r.body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn shutdown_does_not_wait_for_connections_that_are_not_being_served() {
    let gw = Gateway::start_with(
        Options::default()
            .env("TOKAROO_HEADER_READ_TIMEOUT_SECS", "60")
            .env("TOKAROO_KEEP_ALIVE_IDLE_SECS", "60")
            .env("TOKAROO_SHUTDOWN_GRACE_SECS", "10"),
    )
    .await;
    let target = addr(&gw);
    let mut open = Vec::new();
    for i in 0..100 {
        let mut tcp = TcpStream::connect(&target).await.unwrap();
        match i % 3 {
            0 => {}                                                                       // sends nothing
            1 => tcp.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Sl").await.unwrap(), // half a head
            _ => {
                // A kept-alive connection, idle after one answer.
                tcp.write_all(livez(&gw).as_bytes()).await.unwrap();
                read_response(&mut tcp).await.expect("answered");
            }
        }
        open.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    assert_eq!(gw.stop().await, Some(0), "a clean stop");
    assert!(started.elapsed() < Duration::from_secs(5), "stopped after {:?}", started.elapsed());
}
