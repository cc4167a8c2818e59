//! One `LISTEN` connection per process on PostgreSQL, turning notifications into
//! [`Notice`]s for every reader in the process. A notice is only a hint to re-read: what is
//! sent while the connection is down is lost, so a reconnect is announced as
//! [`Notice::Resync`].

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;

use crate::store::Notice;

/// Channel of [`Notice::Events`]: the payload is the execution id.
pub(super) const EVENTS: &str = "executor_events";
/// Channel of [`Notice::Control`]: the payload is the execution id.
pub(super) const CONTROL: &str = "executor_control";
/// Channel of [`Notice::Queue`].
pub(super) const QUEUE: &str = "executor_queue";
/// Notices buffered per reader; one that falls further behind gets [`Notice::Resync`].
const NOTICE_BUFFER: usize = 4096;

/// The listener's end of the notices.
pub(super) struct Shared {
    notices: broadcast::Sender<Notice>,
}

impl Shared {
    /// Starts the process's one listener on `pool`'s server.
    pub(super) fn start(pool: PgPool) -> Shared {
        let (notices, _) = broadcast::channel(NOTICE_BUFFER);
        let sender = notices.clone();
        tokio::spawn(async move { listen(pool, sender).await });
        Shared { notices }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}

/// Forwards notifications as notices, for ever. A lost connection is re-established (sqlx
/// re-subscribes) and announced as [`Notice::Resync`]: what was sent meanwhile is lost, so
/// every reader re-reads.
async fn listen(pool: PgPool, notices: broadcast::Sender<Notice>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL listener: connecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all([EVENTS, CONTROL, QUEUE]).await {
            tracing::warn!(error = %e, "PostgreSQL listener: LISTEN");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let _ = notices.send(Notice::Resync);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let notice = match n.channel() {
                        EVENTS => Notice::Events(n.payload().to_string()),
                        CONTROL => Notice::Control(n.payload().to_string()),
                        _ => Notice::Queue,
                    };
                    let _ = notices.send(notice);
                }
                // The connection dropped; the next call reconnects and listens again.
                Ok(None) => {
                    tracing::warn!("PostgreSQL listener: connection lost, reconnecting");
                    let _ = notices.send(Notice::Resync);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL listener");
                    let _ = notices.send(Notice::Resync);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}
