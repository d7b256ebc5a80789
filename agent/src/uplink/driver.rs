//! The one task that owns the socket: it polls rumqttc's `EventLoop` and
//! forwards every event to the session task. Polling is never cancelled
//! mid-way (only at shutdown), because a cancelled poll can leave a
//! publish registered in rumqttc's state but never written.
//!
//! After a lost connection the driver does not reconnect on its own: it
//! waits for the session task to say it has seen the loss (and how long to
//! back off — rumqttc alone would retry in a tight loop), then empties
//! rumqttc's queues: publishes the session queued before it learned of the
//! loss, rumqttc's copies of unacknowledged publishes, and events of the
//! dead connection. Only then does it poll (reconnect) again. That keeps
//! the session's packet-id pairing exact and leaves republishing to the
//! session, which takes everything unacknowledged from the outbox.

use std::time::Duration;

use rumqttc::{ConnectionError, Event, EventLoop};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events in flight from the driver to the session task. A burst of
/// PUBACKs for a full window (up to `uplink.inflight`) fits many times;
/// when the session is slower, the driver simply waits.
pub(crate) const EVENT_CHANNEL_CAPACITY: usize = 1024;

pub(crate) async fn drive(
    mut eventloop: EventLoop,
    events: mpsc::Sender<Result<Event, ConnectionError>>,
    mut resume: mpsc::Receiver<Duration>,
    stop: CancellationToken,
) {
    loop {
        let polled = tokio::select! {
            _ = stop.cancelled() => return,
            polled = eventloop.poll() => polled,
        };
        let failed = polled.is_err();
        if events.send(polled).await.is_err() {
            return;
        }
        if !failed {
            continue;
        }
        let delay = tokio::select! {
            _ = stop.cancelled() => return,
            delay = resume.recv() => match delay {
                Some(d) => d,
                None => return,
            },
        };
        eventloop.clean();
        eventloop.pending.clear();
        eventloop.state.events.clear();
        // A publish held back for a packet id of the dead connection would
        // wait forever for its PUBACK and block every later publish.
        eventloop.state.collision = None;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
