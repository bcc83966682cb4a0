//! The Redis harness the cluster tests stand on (tests/common/redis.rs),
//! tested against the real `redis-server`: start, the command client's
//! replies, stop, restart on the same port, pause and resume, pub/sub
//! clients killed, and a loud failure when the binary is missing.

mod common;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::TIMEOUT;
use common::redis::{RedisServer, encode, read_reply};

#[test]
fn starts_answers_commands_and_keeps_no_data_across_a_restart() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.command(&["PING"]), "PONG");
    assert_eq!(redis.command(&["SET", "machat:name:dev:Mina", "node-a", "NX", "PX", "30000"]), "OK");
    // NX: a second claim is refused (nil), the value stays.
    assert_eq!(redis.command(&["SET", "machat:name:dev:Mina", "node-b", "NX", "PX", "30000"]), "(nil)");
    assert_eq!(redis.command(&["GET", "machat:name:dev:Mina"]), "node-a");
    assert_eq!(redis.command(&["GET", "missing"]), "(nil)");
    assert_eq!(redis.command(&["SET", "other", "a value with spaces\r\nand a CRLF"]), "OK");
    assert_eq!(redis.command(&["GET", "other"]), "a value with spaces\r\nand a CRLF");
    let mut keys: Vec<String> = redis.command(&["KEYS", "*"]).lines().map(str::to_owned).collect();
    keys.sort();
    assert_eq!(keys, ["machat:name:dev:Mina", "other"]);
    assert_eq!(redis.command(&["KEYS", "nothing:*"]), "");
    assert_eq!(redis.command(&["DEL", "other", "missing"]), "1");
    assert!(redis.command(&["NOSUCHCOMMAND"]).starts_with("(error) ERR unknown command"));
    // No persistence is configured.
    assert_eq!(redis.command(&["CONFIG", "GET", "save"]), "save\n");
    assert_eq!(redis.command(&["CONFIG", "GET", "appendonly"]), "appendonly\nno");

    let (port, pid) = (redis.port(), redis.pid());
    redis.restart();
    assert_eq!(redis.port(), port, "a restart keeps the port");
    assert_ne!(redis.pid(), pid, "a restart is a new process");
    assert_eq!(redis.command(&["PING"]), "PONG");
    assert_eq!(redis.command(&["GET", "machat:name:dev:Mina"]), "(nil)", "nothing was persisted");
    assert_eq!(redis.command(&["DBSIZE"]), "0");
}

#[test]
fn two_servers_at_once_have_ports_of_their_own() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    assert_ne!(a.port(), b.port());
    a.command(&["SET", "where", "a"]);
    b.command(&["SET", "where", "b"]);
    assert_eq!((a.command(&["GET", "where"]), b.command(&["GET", "where"])), ("a".into(), "b".into()));
}

#[test]
fn stop_closes_the_port_and_restart_opens_it_again() {
    let mut redis = RedisServer::start();
    let mut client = TcpStream::connect(redis.addr()).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    redis.stop();
    assert!(!redis.is_running());
    // Connected clients see the connection end; new ones are refused.
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
        Err(error) => assert_eq!(error.kind(), ErrorKind::ConnectionReset),
    }
    let refused = TcpStream::connect(redis.addr()).expect_err("nothing listens after stop");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    redis.stop(); // stopping again does nothing
    redis.restart();
    assert!(redis.is_running());
    assert_eq!(redis.command(&["PING"]), "PONG");
}

#[test]
fn a_paused_server_answers_nothing_until_resumed() {
    let mut redis = RedisServer::start();
    redis.pause();
    // The kernel still completes the connect; Redis reads nothing.
    let mut client = TcpStream::connect(redis.addr()).expect("connects while paused");
    client.write_all(&encode(&["PING"])).unwrap();
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut byte = [0; 1];
    let error = client.read(&mut byte).expect_err("no answer while paused");
    assert!(matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{error}");
    redis.resume();
    // The PING sent while paused is answered now.
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(read_reply(&mut BufReader::new(&client)).unwrap(), "PONG");
    assert_eq!(redis.command(&["PING"]), "PONG");
    // A paused server stops too (stop resumes it to deliver the SIGTERM).
    redis.pause();
    redis.stop();
    assert!(!redis.is_running());
}

#[test]
fn pubsub_channels_and_killing_the_subscribers() {
    let redis = RedisServer::start();
    let subscriber = TcpStream::connect(redis.addr()).unwrap();
    subscriber.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = BufReader::new(subscriber.try_clone().unwrap());
    (&subscriber).write_all(&encode(&["SUBSCRIBE", "machat:room:dev"])).unwrap();
    assert_eq!(read_reply(&mut reader).unwrap(), "subscribe\nmachat:room:dev\n1");
    assert_eq!(redis.command(&["PUBSUB", "CHANNELS"]), "machat:room:dev");
    assert_eq!(redis.command(&["PUBLISH", "machat:room:dev", "Mina:hi\n"]), "1");
    assert_eq!(read_reply(&mut reader).unwrap(), "message\nmachat:room:dev\nMina:hi\n");
    assert_eq!(redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]), "1");
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
        Err(error) => assert_eq!(error.kind(), ErrorKind::ConnectionReset),
    }
    assert_eq!(redis.command(&["PUBSUB", "CHANNELS"]), "");
}

#[test]
#[should_panic(expected = "apt-get install -y redis-server")]
fn a_missing_redis_server_fails_loudly_with_the_install_hint() {
    RedisServer::start_binary("redis-server-that-is-not-installed");
}
