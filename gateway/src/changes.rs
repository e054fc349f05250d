//! Room changes across gateways (issue 12, phase 2): when the HTTP API of any gateway
//! changes a room's settings, every gateway drops its cached settings of the room and
//! checks its own members of it again; a connection no longer allowed is taken out of
//! the room and told `{"type":"left","room":...,"reason":"removed"}`.
//!
//! The change travels on the delivery bus ([`queue::DeliveryBus::announce`]), best
//! effort: a gateway that misses it (the broker was away) catches up when its cached
//! settings expire (`ROOM_CACHE_TTL_MS`), at the latest, and stops the connection at its
//! next send, history or join, which are checked every time.

use crate::access::Access;
use crate::app::App;
use crate::hub::{Hub, LeftReply, Outbound};
use crate::protocol::ErrorCode;
use shared::RoomId;
use std::sync::Arc;

/// Called by the HTTP API once it changed `room` (and dropped it from this gateway's
/// cache): tells every gateway. If the bus does not take it, this gateway applies the
/// change at once by itself; the others have their TTL.
pub async fn announce(app: &App, room: &RoomId) {
    if let Err(e) = app.bus.announce(room).await {
        tracing::warn!(%room, error = %e, "announcing a room change failed; other gateways apply it when their cached settings expire");
        recheck(&app.access, &app.hub, room).await;
    }
}

/// What a gateway does when it hears of a change of `room`: forget the cached settings,
/// then check each local member against the fresh ones.
pub async fn recheck(access: &Access, hub: &Arc<Hub>, room: &RoomId) {
    access.invalidate(room);
    for (conn, member) in hub.members_of(room) {
        match access
            .check(&member.user, member.claim.as_deref(), room)
            .await
        {
            Ok(()) => continue,
            Err(e) if e.code == ErrorCode::Forbidden => {}
            // The store did not answer: the member stays for now; its next send or
            // history is checked again, and so is everything once the entry expires.
            Err(e) => {
                tracing::warn!(%room, user = %member.user, error = %e.message, "re-checking a member after a room change failed");
                continue;
            }
        }
        // Out of the hub first: no live message of the room is queued after the `left`.
        if !hub.leave(room, conn).await {
            continue; // it left meanwhile
        }
        tracing::info!(%room, user = %member.user, conn, "member removed from the room");
        metrics::counter!("courier_members_removed_total").increment(1);
        let left = Outbound::Left(Box::new(LeftReply {
            room: room.clone(),
            reference: None,
            removed: true,
        }));
        // Waits for room in a full buffer without holding up the other members: the
        // writer drains it, or the connection ends and the send fails, which is fine.
        let tx = member.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(left).await;
        });
    }
}
