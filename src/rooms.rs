//! Room bookkeeping: which connections are in which room under which name.
//! Pure data, no sockets: the reactor asks it who should receive a message
//! and tells it who joined and left.
//!
//! Join and leave are O(1): rooms live in a slab, found by name through a
//! hash map; members live in a slab inside their room, found by name through
//! another map. A room is created by its first join and dropped with its
//! last member.
//!
//! Both maps are keyed by the folded key of [`names`](crate::names) (case
//! folding and the confusables skeleton), never by the spelling: `Bob`,
//! `bob` and `Bоb` (Cyrillic `о`) are one name, `Dev` and `ＤＥＶ` one
//! room. A room keeps the spelling of its first join as its name.

use std::collections::HashMap;

use slab::Slab;

use crate::names::Checked;

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
    /// The spelling of the join that created the room.
    name: Box<str>,
    /// The folded key `Rooms` finds the room by.
    key: Box<str>,
    members: Slab<Member>,
    /// Folded member name to its key in `members`; keeps names unique in
    /// the room, however they are spelled.
    slots: HashMap<Box<str>, usize>,
    websocket_members: usize,
}

impl Room {
    /// The room's name as its first member spelled it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The folded key the room is found by (never shown to anyone).
    pub fn key(&self) -> &str {
        &self.key
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

/// The name, or one that folds to the same key, is held by another member
/// of the room: `holder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameTaken {
    pub holder: ConnId,
}

/// Every room on the server.
#[derive(Debug, Default)]
pub struct Rooms {
    /// Folded room name to the room.
    by_key: HashMap<Box<str>, RoomId>,
    rooms: Slab<Room>,
    members: usize,
}

impl Rooms {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `conn` to `room` as `name`, creating the room if needed. Names
    /// and rooms are compared by their folded `key`.
    pub fn join(
        &mut self,
        room: &Checked,
        name: &Checked,
        conn: ConnId,
        transport: Transport,
    ) -> Result<RoomId, NameTaken> {
        if let Some(&id) = self.by_key.get(&room.key)
            && let Some(&slot) = self.rooms[id.0].slots.get(&name.key)
        {
            return Err(NameTaken { holder: self.rooms[id.0].members[slot].conn });
        }
        let id = match self.by_key.get(&room.key) {
            Some(&id) => id,
            None => {
                let id = RoomId(self.rooms.insert(Room {
                    name: room.display.clone(),
                    key: room.key.clone(),
                    members: Slab::new(),
                    slots: HashMap::new(),
                    websocket_members: 0,
                }));
                self.by_key.insert(room.key.clone(), id);
                id
            }
        };
        let entry = &mut self.rooms[id.0];
        let slot = entry.members.insert(Member { conn, transport });
        entry.slots.insert(name.key.clone(), slot);
        if transport == Transport::WebSocket {
            entry.websocket_members += 1;
        }
        self.members += 1;
        Ok(id)
    }

    /// Removes the member whose folded name is `name_key` from the room,
    /// dropping the room if it is now empty. Returns the member that left,
    /// if it was there.
    pub fn leave(&mut self, id: RoomId, name_key: &str) -> Option<Member> {
        let room = self.rooms.get_mut(id.0)?;
        let slot = room.slots.remove(name_key)?;
        let member = room.members.remove(slot);
        if member.transport == Transport::WebSocket {
            room.websocket_members -= 1;
        }
        self.members -= 1;
        if room.is_empty() {
            let room = self.rooms.remove(id.0);
            self.by_key.remove(&room.key);
        }
        Some(member)
    }

    pub fn get(&self, id: RoomId) -> Option<&Room> {
        self.rooms.get(id.0)
    }

    /// The room `room` names, however it is spelled.
    pub fn find(&self, room: &Checked) -> Option<&Room> {
        self.find_key(&room.key)
    }

    /// The room whose folded key is `key`, if it has members.
    pub fn id_of_key(&self, key: &str) -> Option<RoomId> {
        self.by_key.get(key).copied()
    }

    /// The member holding `name` (folded) in `room`, if any.
    pub fn holder(&self, room: &Checked, name: &Checked) -> Option<ConnId> {
        let room = &self.rooms[self.by_key.get(&room.key)?.0];
        room.slots.get(&name.key).map(|&slot| room.members[slot].conn)
    }

    /// The room whose folded key is `key`, if it has members.
    pub fn find_key(&self, key: &str) -> Option<&Room> {
        self.id_of_key(key).and_then(|id| self.get(id))
    }

    /// Every room (each has at least one member).
    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.rooms.iter().map(|(_, room)| room)
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
    use crate::names::{check_name, check_room};

    fn room(raw: &str) -> Checked {
        check_room(raw).unwrap()
    }

    fn name(raw: &str) -> Checked {
        check_name(raw).unwrap()
    }

    #[test]
    fn join_and_leave_create_and_drop_rooms() {
        let mut rooms = Rooms::new();
        let dev = rooms.join(&room("dev"), &name("Mina"), ConnId(1), Transport::Tcp).unwrap();
        assert_eq!(rooms.join(&room("dev"), &name("Ola"), ConnId(2), Transport::WebSocket), Ok(dev));
        assert_eq!(rooms.len(), 1);
        assert_eq!(rooms.member_count(), 2);
        let entry = rooms.get(dev).unwrap();
        assert!(entry.has_tcp_members() && entry.has_websocket_members());
        let mut conns: Vec<_> = entry.members().map(|member| member.conn.0).collect();
        conns.sort();
        assert_eq!(conns, [1, 2]);

        let mina = name("Mina").key;
        assert_eq!(rooms.leave(dev, &mina), Some(Member { conn: ConnId(1), transport: Transport::Tcp }));
        assert!(!rooms.get(dev).unwrap().has_tcp_members());
        assert_eq!(rooms.leave(dev, &mina), None);
        rooms.leave(dev, &name("Ola").key).unwrap();
        assert!(rooms.is_empty());
        assert!(rooms.find(&room("dev")).is_none());
        assert_eq!(rooms.member_count(), 0);
    }

    #[test]
    fn names_are_unique_per_room_only() {
        let mut rooms = Rooms::new();
        let dev = rooms.join(&room("dev"), &name("Mina"), ConnId(1), Transport::Tcp).unwrap();
        assert_eq!(
            rooms.join(&room("dev"), &name("Mina"), ConnId(2), Transport::WebSocket),
            Err(NameTaken { holder: ConnId(1) })
        );
        assert!(rooms.join(&room("ops"), &name("Mina"), ConnId(3), Transport::Tcp).is_ok());
        rooms.leave(dev, &name("Mina").key);
        assert!(rooms.join(&room("dev"), &name("Mina"), ConnId(2), Transport::Tcp).is_ok());
    }

    #[test]
    fn names_that_fold_alike_cannot_share_a_room() {
        let mut rooms = Rooms::new();
        rooms.join(&room("dev"), &name("Bob"), ConnId(1), Transport::Tcp).unwrap();
        for lookalike in ["bob", "BOB", "B\u{43e}b", "\u{ff22}\u{ff2f}\u{ff22}", "B0B"] {
            assert_eq!(
                rooms.join(&room("dev"), &name(lookalike), ConnId(2), Transport::Tcp),
                Err(NameTaken { holder: ConnId(1) }),
                "{lookalike:?}"
            );
        }
        assert_eq!(rooms.member_count(), 1);
    }

    #[test]
    fn rooms_that_fold_alike_are_one_room_named_by_its_first_join() {
        let mut rooms = Rooms::new();
        let dev = rooms.join(&room("Dev"), &name("Mina"), ConnId(1), Transport::Tcp).unwrap();
        assert_eq!(rooms.join(&room("DEV"), &name("Ola"), ConnId(2), Transport::Tcp), Ok(dev));
        assert_eq!(rooms.join(&room("\u{ff44}ev"), &name("Ada"), ConnId(3), Transport::Tcp), Ok(dev));
        assert_eq!(rooms.len(), 1);
        assert_eq!(rooms.get(dev).unwrap().name(), "Dev");
        assert_eq!(rooms.find(&room("dEv")).map(Room::name), Some("Dev"));
    }

    #[test]
    fn a_refused_first_join_leaves_no_empty_room() {
        let mut rooms = Rooms::new();
        let dev = rooms.join(&room("dev"), &name("Mina"), ConnId(1), Transport::Tcp).unwrap();
        rooms.join(&room("dev"), &name("Mina"), ConnId(2), Transport::Tcp).unwrap_err();
        rooms.leave(dev, &name("Mina").key);
        assert_eq!(rooms.len(), 0);
    }
}
