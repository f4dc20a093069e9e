//! DNS over TCP with a cap on open connections: hickory-server's TCP listener spawns one task
//! per connection without a bound, so this accept loop holds a permit per connection and
//! hands each one to hickory's own framing (`TcpStream`) and idle timeout (`TimeoutStream`).
//! At the cap, new connections wait in the kernel's backlog until one closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_server::net::tcp::TcpStream;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandle, TimeoutStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Connections served at once: a resolver keeps one or a few open per server, and each costs
/// a task and two buffers.
pub const MAX_TCP_CONNECTIONS: usize = 1024;
/// A connection that sends no query for this long is closed, so idle or slow clients do not
/// hold the slots.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per connection before the writer waits.
const TCP_RESPONSE_BUFFER: usize = 16;

/// Accepts on `listener` until `stop`, at most `cap` connections at once.
pub async fn serve<H: RequestHandler>(
    listener: tokio::net::TcpListener,
    handler: Arc<H>,
    cap: usize,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(cap));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => tokio::select! {
                    accepted = listener.accept() => accepted.map(|a| (a, permit)),
                    _ = stop.changed() => break,
                },
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let ((stream, src), permit) = match accepted {
            Ok(a) => a,
            Err(err) => {
                tracing::debug!(error = %err, "dns: TCP accept failed");
                continue;
            }
        };
        let handler = handler.clone();
        connections.spawn(async move {
            let _permit = permit;
            connection(stream, src, handler.as_ref()).await;
        });
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

/// Answers the queries of one connection in order until it closes, times out or sends
/// something that is not a DNS message (then it is closed).
async fn connection<H: RequestHandler>(
    stream: tokio::net::TcpStream,
    src: SocketAddr,
    handler: &H,
) {
    let (framed, handle) = TcpStream::from_stream_with_buffer_size(
        AsyncIoTokioAsStd(stream),
        src,
        TCP_RESPONSE_BUFFER,
    );
    let mut messages = TimeoutStream::new(framed, TCP_TIMEOUT);
    while let Some(Ok(message)) = messages.next().await {
        let (bytes, src) = message.into_parts();
        let Ok(request) = Request::from_bytes(bytes, src, Protocol::Tcp) else {
            return;
        };
        let response = ResponseHandle::new(src, handle.clone(), Protocol::Tcp);
        handler
            .handle_request::<_, TokioTime>(&request, response)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::op::{Message, MessageType, OpCode, Query};
    use hickory_server::proto::rr::{Name, RecordType};
    use hickory_server::zone_handler::Catalog;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn catalog() -> Catalog {
        let config = crate::config::DnsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            zone: "z.example".into(),
            nameservers: vec!["ns1.example".into()],
            hostmaster: "h.example".into(),
            ttl: 300,
            rate_per_second: 0,
            rate_burst: 1,
        };
        let zone = Arc::new(crate::dns::Zone::new(&config, 1).unwrap());
        let mut catalog = Catalog::new();
        catalog.upsert(zone.origin_name().clone(), vec![zone]);
        catalog
    }

    async fn soa_over(stream: &mut tokio::net::TcpStream) -> Message {
        let mut msg = Message::new(7, MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(
            Name::from_ascii("z.example.").unwrap(),
            RecordType::SOA,
        ));
        let bytes = msg.to_vec().unwrap();
        let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
        stream
            .write_all(&[&len[..], &bytes].concat())
            .await
            .unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    }

    #[tokio::test]
    async fn at_the_cap_a_new_connection_waits_for_a_slot() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let server = tokio::spawn(serve(listener, Arc::new(catalog()), 1, stop));
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(soa_over(&mut first).await.answers.len(), 1);
        // The second is accepted by the kernel but not served while the first holds the slot.
        let released = Arc::new(AtomicBool::new(false));
        let seen = released.clone();
        let second = tokio::spawn(async move {
            let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
            let answer = soa_over(&mut second).await;
            (answer.answers.len(), seen.load(Ordering::SeqCst))
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        released.store(true, Ordering::SeqCst);
        drop(first);
        let (answers, after_release) = second.await.unwrap();
        assert_eq!(answers, 1);
        assert!(after_release, "answered while the only slot was taken");
        stop_tx.send(true).unwrap();
        server.await.unwrap();
    }
}
