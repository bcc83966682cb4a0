//! Room bookkeeping: which connections are in which room under which name.
//! Pure data, no sockets: the reactor asks it who should receive a message
//! and tells it who joined and left.
//!
//! Join and leave are O(1): rooms live in a slab, found by name through a
//! hash map; members live in a slab inside their room, found by name through
//! another map. A room is created by its first join and dropped with its
//! last member.

use std::collections::HashMap;

use slab::Slab;

/// Identifies a connection while it is open: its key in the reactor's
/// slab (and its mio token). A closed connection's id may be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub usize);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How a member receives messages; a broadcast encodes once per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    WebSocket,
}

/// Identifies a room while it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomId(usize);

/// One member as the broadcast sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub conn: ConnId,
    pub transport: Transport,
}

#[derive(Debug)]
pub struct Room {
    name: Box<str>,
    members: Slab<Member>,
    /// Member name to its key in `members`; keeps names unique in the room.
    slots: HashMap<Box<str>, usize>,
    websocket_members: usize,
}

impl Room {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().map(|(_, member)| member)
    }

    pub fn has_tcp_members(&self) -> bool {
        self.websocket_members < self.members.len()
    }

    pub fn has_websocket_members(&self) -> bool {
        self.websocket_members > 0
    }
}

/// The name is held by another member of the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameTaken;

/// Every room on the server.
#[derive(Debug, Default)]
pub struct Rooms {
    by_name: HashMap<Box<str>, RoomId>,
    rooms: Slab<Room>,
    members: usize,
}

impl Rooms {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `conn` to `room` as `name`, creating the room if needed.
    pub fn join(
        &mut self,
        room: &str,
        name: &str,
        conn: ConnId,
        transport: Transport,
    ) -> Result<RoomId, NameTaken> {
        let id = match self.by_name.get(room) {
            Some(&id) => id,
            None => {
                let id = RoomId(self.rooms.insert(Room {
                    name: room.into(),
                    members: Slab::new(),
                    slots: HashMap::new(),
                    websocket_members: 0,
                }));
                self.by_name.insert(room.into(), id);
                id
            }
        };
        let entry = &mut self.rooms[id.0];
        if entry.slots.contains_key(name) {
            return Err(NameTaken);
        }
        let slot = entry.members.insert(Member { conn, transport });
        entry.slots.insert(name.into(), slot);
        if transport == Transport::WebSocket {
            entry.websocket_members += 1;
        }
        self.members += 1;
        Ok(id)
    }

    /// Removes `name` from the room, dropping the room if it is now empty.
    /// Returns the member that left, if it was there.
    pub fn leave(&mut self, id: RoomId, name: &str) -> Option<Member> {
        let room = self.rooms.get_mut(id.0)?;
        let slot = room.slots.remove(name)?;
        let member = room.members.remove(slot);
        if member.transport == Transport::WebSocket {
            room.websocket_members -= 1;
        }
        self.members -= 1;
        if room.is_empty() {
            let room = self.rooms.remove(id.0);
            self.by_name.remove(&room.name);
        }
        Some(member)
    }

    pub fn get(&self, id: RoomId) -> Option<&Room> {
        self.rooms.get(id.0)
    }

    pub fn find(&self, name: &str) -> Option<&Room> {
        self.by_name.get(name).and_then(|&id| self.get(id))
    }

    /// Number of rooms (each has at least one member).
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Members over all rooms.
    pub fn member_count(&self) -> usize {
        self.members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_and_leave_create_and_drop_rooms() {
        let mut rooms = Rooms::new();
        let dev = rooms.join("dev", "Mina", ConnId(1), Transport::Tcp).unwrap();
        assert_eq!(rooms.join("dev", "Ola", ConnId(2), Transport::WebSocket), Ok(dev));
        assert_eq!(rooms.len(), 1);
        assert_eq!(rooms.member_count(), 2);
        let room = rooms.get(dev).unwrap();
        assert!(room.has_tcp_members() && room.has_websocket_members());
        let mut conns: Vec<_> = room.members().map(|member| member.conn.0).collect();
        conns.sort();
        assert_eq!(conns, [1, 2]);

        assert_eq!(rooms.leave(dev, "Mina"), Some(Member { conn: ConnId(1), transport: Transport::Tcp }));
        assert!(!rooms.get(dev).unwrap().has_tcp_members());
        assert_eq!(rooms.leave(dev, "Mina"), None);
        rooms.leave(dev, "Ola").unwrap();
        assert!(rooms.is_empty());
        assert!(rooms.find("dev").is_none());
        assert_eq!(rooms.member_count(), 0);
    }

    #[test]
    fn names_are_unique_per_room_only() {
        let mut rooms = Rooms::new();
        let dev = rooms.join("dev", "Mina", ConnId(1), Transport::Tcp).unwrap();
        assert_eq!(rooms.join("dev", "Mina", ConnId(2), Transport::WebSocket), Err(NameTaken));
        assert!(rooms.join("ops", "Mina", ConnId(3), Transport::Tcp).is_ok());
        rooms.leave(dev, "Mina");
        assert!(rooms.join("dev", "Mina", ConnId(2), Transport::Tcp).is_ok());
    }

    #[test]
    fn a_refused_first_join_leaves_no_empty_room() {
        let mut rooms = Rooms::new();
        let dev = rooms.join("dev", "Mina", ConnId(1), Transport::Tcp).unwrap();
        rooms.join("dev", "Mina", ConnId(2), Transport::Tcp).unwrap_err();
        rooms.leave(dev, "Mina");
        assert_eq!(rooms.len(), 0);
    }
}
