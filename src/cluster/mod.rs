//! Cluster mode (issue #14): rooms that span several machat nodes, with
//! Redis carrying messages between them and holding the names taken. The
//! Redis connections are sockets on the event loop like any other; what
//! they carry is RESP, read and written by [`resp`] without sockets.

pub mod resp;
