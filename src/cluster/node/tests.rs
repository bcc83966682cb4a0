//! The cluster machine with a fake clock and no socket: the test plays
//! Redis, reading the commands the machine wrote and answering them.

use super::*;

const TTL: Duration = Duration::from_secs(30);

fn config(node: &str) -> ClusterConfig {
    ClusterConfig {
        url: RedisUrl::parse("redis://127.0.0.1:6379").unwrap(),
        node_id: node.into(),
        name_ttl: TTL,
        join_wait: Duration::from_secs(5),
    }
}

/// Both links up, their login output taken.
fn connected(node: &str) -> (Cluster, Instant) {
    let now = Instant::now();
    let mut cluster = Cluster::new(config(node), now);
    assert!(cluster.connect_due(LinkId::Subscriber, now));
    cluster.connecting(LinkId::Subscriber);
    cluster.connected(LinkId::Subscriber);
    assert!(cluster.connect_due(LinkId::Commands, now));
    cluster.connecting(LinkId::Commands);
    greet(&mut cluster);
    assert_eq!(cluster.state(), ClusterState::Connected);
    (cluster, now)
}

/// Connects the commands link and answers its PING: it is up.
fn greet(cluster: &mut Cluster) {
    cluster.connected(LinkId::Commands);
    assert_eq!(commands(cluster, LinkId::Commands), [["PING"]]);
    assert_ne!(cluster.state(), ClusterState::Connected, "not up before Redis answers");
    cluster.received(LinkId::Commands, b"+PONG\r\n").unwrap();
}

/// The commands `link` has written since last asked, decoded.
fn commands(cluster: &mut Cluster, link: LinkId) -> Vec<Vec<String>> {
    let mut bytes = cluster.output(link).to_vec();
    cluster.wrote(link, bytes.len());
    let mut commands = Vec::new();
    while !bytes.is_empty() {
        let Ok(Status::Complete { value: Reply::Array(parts), consumed }) =
            resp::parse(&bytes, &resp::Limits::default())
        else {
            panic!("not a command: {bytes:?}")
        };
        let words = parts
            .into_iter()
            .map(|part| match part {
                Reply::Bulk(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                other => panic!("not a bulk string: {other:?}"),
            })
            .collect();
        commands.push(words);
        bytes.drain(..consumed);
    }
    commands
}

fn bulk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

fn message(channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = b"*3\r\n".to_vec();
    out.extend(bulk(b"message"));
    out.extend(bulk(channel.as_bytes()));
    out.extend(bulk(payload));
    out
}

const CONN: ConnId = ConnId(3);

#[test]
fn a_claim_is_set_nx_with_the_ttl_and_its_answer_comes_back() {
    let (mut cluster, now) = connected("A");
    cluster.claim(CONN, "dev", "mina", now);
    let sent = commands(&mut cluster, LinkId::Commands);
    assert_eq!(sent, [["SET", "machat:name:dev:mina", "A", "NX", "PX", "30000"]]);
    cluster.received(LinkId::Commands, b"+OK\r\n").unwrap();
    let effects = cluster.take_effects();
    assert_eq!(effects.claims, [(CONN, "machat:name:dev:mina".into(), Claim::Claimed)]);

    cluster.claim(ConnId(4), "dev", "mina", now);
    cluster.received(LinkId::Commands, b"$-1\r\n").unwrap();
    assert_eq!(cluster.take_effects().claims[0].2, Claim::Taken);
    let stats = cluster.stats();
    assert_eq!((stats.claims, stats.claim_conflicts), (1, 1));
}

#[test]
fn a_claim_waits_for_the_link_then_gives_up() {
    let now = Instant::now();
    let mut cluster = Cluster::new(config("A"), now);
    cluster.claim(CONN, "dev", "mina", now);
    assert!(cluster.output(LinkId::Commands).is_empty(), "nothing is written to a link that is down");
    assert_eq!(cluster.next_deadline(), Some(now), "links are due to connect");
    cluster.link_failed(LinkId::Commands, now, "refused");
    cluster.tick(now + Duration::from_secs(4));
    assert!(cluster.take_effects().claims.is_empty(), "still within --cluster-join-wait");
    cluster.tick(now + Duration::from_secs(5));
    let effects = cluster.take_effects();
    assert_eq!(effects.claims, [(CONN, "machat:name:dev:mina".into(), Claim::Unavailable)]);

    // A claim that waits less is sent as soon as the link is up.
    cluster.claim(ConnId(4), "dev", "ola", now + Duration::from_secs(5));
    cluster.connecting(LinkId::Commands);
    greet(&mut cluster);
    assert_eq!(commands(&mut cluster, LinkId::Commands)[0][..2], ["SET", "machat:name:dev:ola"]);
}

#[test]
fn a_lost_link_answers_the_claims_in_flight_as_unavailable_and_backs_off() {
    let (mut cluster, now) = connected("A");
    cluster.claim(CONN, "dev", "mina", now);
    cluster.link_failed(LinkId::Commands, now, "reset");
    assert_eq!(cluster.take_effects().claims[0].2, Claim::Unavailable);
    assert_eq!(cluster.state(), ClusterState::Reconnecting);
    let first = cluster.next_deadline().unwrap() - now;
    assert!(first >= FIRST_BACKOFF / 2 && first <= FIRST_BACKOFF * 3 / 2, "{first:?}");
    // Failing again doubles the backoff (±50 %), up to the cap.
    let mut at = now;
    for _ in 0..10 {
        at = cluster.next_deadline().unwrap();
        assert!(cluster.connect_due(LinkId::Commands, at));
        cluster.connecting(LinkId::Commands);
        cluster.link_failed(LinkId::Commands, at, "refused");
    }
    let last = cluster.next_deadline().unwrap() - at;
    assert!(last <= MAX_BACKOFF * 3 / 2 && last >= MAX_BACKOFF / 2, "{last:?}");
}

#[test]
fn held_names_are_refreshed_and_claimed_again_after_a_reconnect() {
    let (mut cluster, now) = connected("A");
    cluster.claim(CONN, "dev", "mina", now);
    commands(&mut cluster, LinkId::Commands);
    cluster.received(LinkId::Commands, b"+OK\r\n").unwrap();
    cluster.take_effects();

    cluster.tick(now + TTL / 3);
    let refresh = commands(&mut cluster, LinkId::Commands);
    assert_eq!(refresh.len(), 1);
    assert_eq!(refresh[0][0], "EVAL");
    assert_eq!(refresh[0][3..], ["machat:name:dev:mina", "A", "30000"]);
    cluster.received(LinkId::Commands, b":1\r\n").unwrap();
    assert!(cluster.take_effects().lost.is_empty());

    // Redis comes back empty, and another node took the name meanwhile.
    cluster.link_failed(LinkId::Commands, now + TTL, "reset");
    cluster.connecting(LinkId::Commands);
    greet(&mut cluster);
    let reclaim = commands(&mut cluster, LinkId::Commands);
    assert_eq!(reclaim[0][3], "machat:name:dev:mina");
    cluster.received(LinkId::Commands, b":0\r\n").unwrap();
    assert_eq!(cluster.take_effects().lost, [CONN]);
    assert_eq!(cluster.stats().names_lost, 1);
    assert_eq!(cluster.stats().reconnects, 1);
}

#[test]
fn a_release_is_a_compare_and_delete() {
    let (mut cluster, _) = connected("A");
    cluster.release("machat:name:dev:mina");
    let sent = commands(&mut cluster, LinkId::Commands);
    assert_eq!(sent[0][0], "EVAL");
    assert!(sent[0][1].contains("DEL"));
    assert_eq!(sent[0][3..], ["machat:name:dev:mina", "A"]);
}

#[test]
fn a_turn_publishes_once_per_room_and_other_nodes_payloads_are_delivered() {
    let (mut cluster, _) = connected("A");
    cluster.publish("dev", b"mina:one\n");
    cluster.publish("ops", b"ola:x\n");
    cluster.publish("dev", b"mina:two\nbo:three\n");
    cluster.end_turn(Instant::now());
    let sent = commands(&mut cluster, LinkId::Commands);
    assert_eq!(
        sent,
        [
            ["PUBLISH", "machat:room:dev", "1 A\nmina:one\nmina:two\nbo:three\n"],
            ["PUBLISH", "machat:room:ops", "1 A\nola:x\n"],
        ]
    );
    assert_eq!(cluster.stats().publishes_sent, 2);
    cluster.received(LinkId::Commands, b":2\r\n:0\r\n").unwrap();

    // Another node's payload is delivered; this node's own is not again.
    let mut pushes = message("machat:room:dev", b"1 B\nbo:hi\n");
    pushes.extend(message("machat:room:dev", b"1 A\nmina:one\n"));
    pushes.extend(message("machat:room:dev", b"2 B\nfrom:the future\n"));
    pushes.extend(message("machat:room:dev", b"1 B\nno newline"));
    cluster.received(LinkId::Subscriber, &pushes).unwrap();
    let effects = cluster.take_effects();
    assert_eq!(effects.remote, [("dev".into(), b"bo:hi\n".to_vec())]);
    let stats = cluster.stats();
    assert_eq!((stats.payloads_received, stats.payloads_refused), (1, 2));
}

#[test]
fn publishes_that_cannot_be_sent_are_dropped_and_counted() {
    let (mut cluster, now) = connected("A");
    cluster.link_failed(LinkId::Commands, now, "reset");
    cluster.publish("dev", b"mina:one\nmina:two\n");
    cluster.end_turn(now);
    let stats = cluster.stats();
    assert_eq!((stats.publishes_dropped, stats.lines_dropped), (1, 2));

    // A Redis that does not read: the queue stops at its cap.
    cluster.connecting(LinkId::Commands);
    greet(&mut cluster);
    let line = vec![b'x'; 1024 * 1024 - 1];
    for _ in 0..40 {
        let mut batch = b"mina:".to_vec();
        batch.extend_from_slice(&line);
        batch.push(b'\n');
        cluster.publish("dev", &batch);
        cluster.end_turn(now);
    }
    assert!(cluster.output(LinkId::Commands).len() <= MAX_QUEUED_BYTES);
    let stats = cluster.stats();
    assert!(stats.publishes_dropped > 1 && stats.publishes_sent >= 15, "{stats:?}");
}

#[test]
fn rooms_are_subscribed_with_their_first_member_and_unsubscribed_a_second_after_the_last() {
    let (mut cluster, now) = connected("A");
    cluster.member_joined("dev");
    cluster.member_joined("dev");
    assert_eq!(commands(&mut cluster, LinkId::Subscriber), [["SUBSCRIBE", "machat:room:dev"]]);
    cluster.member_left("dev", now);
    cluster.member_left("dev", now);
    cluster.tick(now + UNSUBSCRIBE_AFTER / 2);
    // Back within the second: no unsubscribe, no resubscribe.
    cluster.member_joined("dev");
    cluster.member_left("dev", now + UNSUBSCRIBE_AFTER / 2);
    cluster.tick(now + UNSUBSCRIBE_AFTER);
    assert!(commands(&mut cluster, LinkId::Subscriber).is_empty());
    cluster.tick(now + UNSUBSCRIBE_AFTER * 3 / 2);
    assert_eq!(commands(&mut cluster, LinkId::Subscriber), [["UNSUBSCRIBE", "machat:room:dev"]]);
    assert_eq!(cluster.stats().subscriptions, 0);

    // After a reconnect, every room with local members is subscribed again.
    cluster.member_joined("ops");
    commands(&mut cluster, LinkId::Subscriber);
    cluster.link_failed(LinkId::Subscriber, now, "killed");
    cluster.connecting(LinkId::Subscriber);
    cluster.connected(LinkId::Subscriber);
    assert_eq!(commands(&mut cluster, LinkId::Subscriber), [["SUBSCRIBE", "machat:room:ops"]]);
}

#[test]
fn login_and_database_come_first_and_a_refused_login_fails_the_link() {
    let now = Instant::now();
    let mut config = config("A");
    config.url = RedisUrl::parse("redis://user:secret@localhost:7000/2").unwrap();
    let mut cluster = Cluster::new(config, now);
    cluster.connecting(LinkId::Commands);
    cluster.connected(LinkId::Commands);
    let sent = commands(&mut cluster, LinkId::Commands);
    assert_eq!(sent, [vec!["AUTH", "user", "secret"], vec!["SELECT", "2"], vec!["PING"]]);
    assert!(cluster.received(LinkId::Commands, b"-WRONGPASS invalid username-password pair\r\n").is_err());
    assert!(!format!("{:?}", cluster.config.url).contains("secret"), "the password stays out of logs");
}

#[test]
fn urls() {
    let url = RedisUrl::parse("redis://:pw@example.com:6380/3").unwrap();
    assert_eq!((url.host.as_str(), url.port, url.db), ("example.com", 6380, 3));
    assert_eq!((url.username, url.password.as_deref()), (None, Some("pw")));
    let url = RedisUrl::parse("redis://[::1]:7000").unwrap();
    assert_eq!((url.host.as_str(), url.port, url.address()), ("::1", 7000, "[::1]:7000".to_owned()));
    assert_eq!(RedisUrl::parse("redis://localhost").unwrap().port, 6379);
    for bad in ["localhost:6379", "http://x", "redis://", "redis://h:port", "redis://h/db", "rediss://h"] {
        assert!(RedisUrl::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_claim_redis_does_not_answer_in_time_is_unavailable_and_released_if_granted_later() {
    let (mut cluster, now) = connected("A");
    cluster.claim(CONN, "dev", "mina", now);
    commands(&mut cluster, LinkId::Commands);
    assert_eq!(cluster.next_deadline(), Some(now + Duration::from_secs(5)));
    cluster.tick(now + Duration::from_secs(5));
    assert_eq!(cluster.take_effects().claims, [(CONN, "machat:name:dev:mina".into(), Claim::Unavailable)]);
    // Redis wakes up and grants it: nobody wants it any more.
    cluster.received(LinkId::Commands, b"+OK\r\n").unwrap();
    assert!(cluster.take_effects().claims.is_empty());
    let sent = commands(&mut cluster, LinkId::Commands);
    assert_eq!((sent[0][0].as_str(), sent[0][3].as_str()), ("EVAL", "machat:name:dev:mina"));
}

#[test]
fn a_commands_link_that_stops_answering_is_given_up_after_the_reply_timeout() {
    let (mut cluster, now) = connected("A");
    cluster.publish("dev", b"mina:one\n");
    cluster.end_turn(now);
    assert_eq!(cluster.next_deadline(), Some(now + REPLY_TIMEOUT));
    // A reply (any) is progress: the clock starts again.
    cluster.received(LinkId::Commands, b":1\r\n").unwrap();
    cluster.claim(CONN, "dev", "mina", now + Duration::from_secs(3));
    cluster.watch(now + Duration::from_secs(3));
    cluster.watch(now + Duration::from_secs(7));
    assert_eq!(cluster.state(), ClusterState::Connected, "answered 4 s ago");
    cluster.watch(now + Duration::from_secs(8));
    assert_eq!(cluster.state(), ClusterState::Reconnecting);
    assert!(cluster.is_down(LinkId::Commands));
    assert_eq!(cluster.take_effects().claims[0].2, Claim::Unavailable);
    // An idle link owes nothing and is never given up.
    let (mut idle, now) = connected("B");
    idle.watch(now + Duration::from_secs(60));
    assert_eq!(idle.state(), ClusterState::Connected);
}

#[test]
fn a_redis_that_accepts_but_never_answers_is_not_up() {
    let now = Instant::now();
    let mut cluster = Cluster::new(config("A"), now);
    cluster.connecting(LinkId::Subscriber);
    cluster.connected(LinkId::Subscriber);
    cluster.connecting(LinkId::Commands);
    cluster.connected(LinkId::Commands);
    cluster.claim(CONN, "dev", "mina", now);
    assert_eq!(commands(&mut cluster, LinkId::Commands), [["PING"]], "the claim waits for the answer");
    cluster.watch(now);
    cluster.watch(now + REPLY_TIMEOUT);
    assert!(cluster.is_down(LinkId::Commands), "a silent greeting is given up");
    assert_eq!(cluster.state(), ClusterState::Connecting);
}
