//! Read state from a connection: `read` moves the user's cursor in a room (forward only,
//! in the store) and tells the user's other connections; `reads` lists how far the
//! room's members have read ("seen by").

use super::{Reply, Session, frame, store_unavailable};
use crate::protocol::{READS_LIST_MAX, ServerEvent};
use shared::RoomId;

impl Session {
    pub(super) async fn mark_read(
        &mut self,
        room: RoomId,
        seq: u64,
        reference: Option<String>,
    ) -> Reply {
        self.allow_joined(&room).await?;
        let store = &self.app.store;
        let cursor = store
            .mark_read(&room, &self.user, seq)
            .await
            .map_err(store_unavailable("moving a read cursor"))?;
        let unread = store
            .unread(&room, &self.user, cursor)
            .await
            .map_err(store_unavailable("counting unread messages"))?;
        // A `seq` below the answer cannot have moved the cursor (it only goes forward):
        // nothing to tell. At or above it, it may have; told to the other connections
        // again at worst, which keep the highest cursor they hear of anyway.
        if cursor > 0 && seq >= cursor {
            let p = &self.app.presence;
            p.read(&self.app.hub, &room, &self.user, self.conn, cursor, unread);
        }
        Ok(Some(frame(ServerEvent::Read {
            room: &room,
            seq: cursor,
            unread,
            reference: reference.as_deref(),
        })))
    }

    /// The room's most advanced read cursors, most advanced first.
    pub(super) async fn reads(&mut self, room: RoomId, reference: Option<String>) -> Reply {
        self.allow_joined(&room).await?;
        let reads = self
            .app
            .store
            .reads(&room, READS_LIST_MAX)
            .await
            .map_err(store_unavailable("listing a room's read cursors"))?;
        Ok(Some(frame(ServerEvent::Reads {
            room: &room,
            reads: &reads,
            reference: reference.as_deref(),
        })))
    }
}
