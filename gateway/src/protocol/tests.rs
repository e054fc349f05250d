//! Unit tests of the wire contract: every command parsed or refused with its code, every
//! event shaped as docs/protocol.md shows it.

use super::*;
use shared::ids::{ClientMsgId, RoomId, UserId};

fn code(text: &str) -> ErrorCode {
    parse_command(text).unwrap_err().code
}

#[test]
fn parses_every_command() {
    let r = parse_command(r#"{"type":"join","room":"lobby","since":3,"ref":"r1"}"#).unwrap();
    assert_eq!(r.reference.as_deref(), Some("r1"));
    assert!(matches!(r.command, Command::Join { since: Some(3), .. }));
    let r = parse_command(r#"{"type":"send","room":"lobby","id":"c-1","body":"hi"}"#).unwrap();
    assert!(matches!(r.command, Command::Send { reply_to: None, .. }));
    let r = parse_command(r#"{"type":"history","room":"lobby","limit":999}"#).unwrap();
    assert!(matches!(
        r.command,
        Command::History {
            limit: 200,
            before: None,
            ..
        }
    ));
    assert_eq!(
        parse_command(r#"{"type":"ping"}"#).unwrap().command,
        Command::Ping
    );
    assert_eq!(
        parse_command(r#"{"type":"typing","room":"lobby"}"#)
            .unwrap()
            .command,
        Command::Typing {
            room: RoomId::parse("lobby").unwrap()
        }
    );
    let r = parse_command(r#"{"type":"presence","room":"lobby","ref":"p"}"#).unwrap();
    assert!(matches!(r.command, Command::Presence { .. }));
    assert_eq!(code(r#"{"type":"typing"}"#), ErrorCode::BadRequest);
    let r = parse_command(r#"{"type":"rooms","ref":"r2"}"#).unwrap();
    assert_eq!(
        (r.command, r.reference.as_deref()),
        (Command::Rooms, Some("r2"))
    );
}

#[test]
fn refuses_bad_input_with_codes() {
    assert_eq!(code("not json"), ErrorCode::BadRequest);
    assert_eq!(code("[1,2]"), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"room":"x"}"#), ErrorCode::BadRequest);
    assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::BadRequest);
    assert_eq!(
        code(r#"{"type":"join","room":"a b"}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"type":"join","room":"a","since":-1}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"type":"send","room":"a","id":"1","body":""}"#),
        ErrorCode::BadRequest
    );
    let big = format!(
        r#"{{"type":"send","room":"a","id":"1","body":"{}"}}"#,
        "x".repeat(4097)
    );
    assert_eq!(code(&big), ErrorCode::TooLarge);
    let exact = format!(
        r#"{{"type":"send","room":"a","id":"1","body":"{}"}}"#,
        "é".repeat(2048)
    );
    assert!(parse_command(&exact).is_ok());
}

#[test]
fn bodies_with_control_characters_are_bad_requests() {
    for body in [
        "a\\u0000b",
        "\\u001b[31m",
        "del \u{7f}",
        "c1 \u{85}",
        "\\u001f🙂",
    ] {
        let frame = format!(r#"{{"type":"send","room":"a","id":"1","body":"{body}"}}"#);
        assert_eq!(code(&frame), ErrorCode::BadRequest, "{body:?}");
    }
    let e = CommandError::from(BodyError::ControlCharacter);
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert_eq!(
        CommandError::from(BodyError::TooLarge(5000)).code,
        ErrorCode::TooLarge
    );
}

#[test]
fn errors_echo_ref_and_id() {
    let e =
        parse_command(r#"{"type":"send","room":"a","id":"c-9","ref":"r","body":""}"#).unwrap_err();
    assert_eq!(e.reference.as_deref(), Some("r"));
    assert_eq!(e.id.as_deref(), Some("c-9"));
    let long = format!(r#"{{"type":"ping","ref":"{}"}}"#, "r".repeat(65));
    assert_eq!(code(&long), ErrorCode::BadRequest);
}

#[test]
fn events_match_the_contract() {
    let room = RoomId::parse("lobby").unwrap();
    let ev = ServerEvent::Joined {
        room: &room,
        head: 7,
        read: 5,
        unread: 0,
        truncated: false,
        reference: None,
    };
    assert_eq!(
        ev.to_json(),
        r#"{"type":"joined","room":"lobby","head":7,"read":5,"unread":0}"#,
        "read and unread are always there"
    );
    let rooms = [room.clone()];
    let ev = ServerEvent::Rooms {
        rooms: &rooms,
        reference: Some("r"),
    };
    assert_eq!(
        ev.to_json(),
        r#"{"type":"rooms","rooms":["lobby"],"ref":"r"}"#
    );
    let bob = UserId::parse("bob").unwrap();
    let ev = ServerEvent::Member {
        room: &room,
        user: &bob,
        state: "online",
    };
    assert_eq!(
        ev.to_json(),
        r#"{"type":"member","room":"lobby","user":"bob","state":"online"}"#
    );
    let ev = ServerEvent::Typing {
        room: &room,
        user: &bob,
    };
    assert_eq!(
        ev.to_json(),
        r#"{"type":"typing","room":"lobby","user":"bob"}"#
    );
    let ev = ServerEvent::Presence {
        room: &room,
        users: std::slice::from_ref(&bob),
        truncated: false,
        reference: Some("p"),
    };
    assert_eq!(
        ev.to_json(),
        r#"{"type":"presence","room":"lobby","users":["bob"],"ref":"p"}"#
    );
    let e = CommandError::new(ErrorCode::NotJoined, "join first");
    assert_eq!(
        e.to_event().to_json(),
        r#"{"type":"error","code":"not_joined","message":"join first"}"#
    );
}

fn lobby() -> RoomId {
    RoomId::parse("lobby").unwrap()
}

fn id(s: &str) -> ClientMsgId {
    ClientMsgId::parse(s).unwrap()
}

#[test]
fn parses_the_log_event_commands() {
    let cmd = |t: &str| parse_command(t).unwrap().command;
    assert_eq!(
        cmd(r#"{"type":"edit","room":"lobby","id":"e-1","target":43,"body":"Preis: 12,50 €"}"#),
        Command::Edit {
            room: lobby(),
            id: id("e-1"),
            target: 43,
            body: "Preis: 12,50 €".into()
        }
    );
    assert_eq!(
        cmd(r#"{"type":"delete","room":"lobby","id":"d-1","target":43}"#),
        Command::Delete {
            room: lobby(),
            id: id("d-1"),
            target: 43
        }
    );
    assert_eq!(
        cmd(r#"{"type":"react","room":"lobby","id":"r-1","target":43,"emoji":"👍"}"#),
        Command::React {
            room: lobby(),
            id: id("r-1"),
            target: 43,
            emoji: "👍".into(),
            remove: false
        }
    );
    let r =
        cmd(r#"{"type":"react","room":"lobby","id":"r-2","target":4,"emoji":"🇯🇵","remove":true}"#);
    assert!(matches!(r, Command::React { remove: true, .. }));
    assert_eq!(
        cmd(r#"{"type":"send","room":"lobby","id":"c-2","body":"да","reply_to":43}"#),
        Command::Send {
            room: lobby(),
            id: id("c-2"),
            body: "да".into(),
            reply_to: Some(43)
        }
    );
    assert_eq!(
        cmd(r#"{"type":"read","room":"lobby","seq":0}"#),
        Command::Read {
            room: lobby(),
            seq: 0
        }
    );
    assert_eq!(
        cmd(r#"{"type":"reads","room":"lobby"}"#),
        Command::Reads { room: lobby() }
    );
}

#[test]
fn the_new_commands_are_counted_by_type() {
    for (frame, kind) in [
        (
            r#"{"type":"edit","room":"a","id":"e","target":1,"body":"x"}"#,
            "edit",
        ),
        (r#"{"type":"read","room":"a","seq":1}"#, "read"),
        (r#"{"type":"reads","room":"a"}"#, "reads"),
    ] {
        assert_eq!(parse_command(frame).unwrap().command.kind(), kind);
    }
}

#[test]
fn refuses_malformed_log_events_echoing_ref_and_id() {
    let refused = [
        r#"{"type":"edit","room":"a","id":"e-1","body":"x"}"#,
        r#"{"type":"edit","room":"a","id":"e-1","target":0,"body":"x"}"#,
        r#"{"type":"edit","room":"a","id":"e-1","target":"43","body":"x"}"#,
        r#"{"type":"edit","room":"a","id":"e-1","target":1,"body":""}"#,
        r#"{"type":"edit","room":"a","id":"e-1","target":1,"body":"a\u0007"}"#,
        r#"{"type":"delete","room":"a","id":"e-1"}"#,
        r#"{"type":"delete","room":"a","id":"e-1","target":-4}"#,
        r#"{"type":"react","room":"a","id":"e-1","target":1}"#,
        r#"{"type":"react","room":"a","id":"e-1","target":1,"emoji":""}"#,
        r#"{"type":"react","room":"a","id":"e-1","target":1,"emoji":"thumbs up"}"#,
        r#"{"type":"react","room":"a","id":"e-1","target":1,"emoji":7}"#,
        r#"{"type":"react","room":"a","id":"e-1","target":1,"emoji":"x","remove":"yes"}"#,
        r#"{"type":"send","room":"a","id":"e-1","body":"x","reply_to":0}"#,
        r#"{"type":"send","room":"a","id":"e-1","body":"x","reply_to":"3"}"#,
    ];
    for frame in refused {
        let with_ref = frame.replacen('{', r#"{"ref":"r9","#, 1);
        let e = parse_command(&with_ref).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{frame}");
        assert_eq!(
            (e.reference.as_deref(), e.id.as_deref()),
            (Some("r9"), Some("e-1")),
            "{frame}"
        );
    }
    let long = "x".repeat(33);
    let frame = format!(r#"{{"type":"react","room":"a","id":"e","target":1,"emoji":"{long}"}}"#);
    assert_eq!(code(&frame), ErrorCode::BadRequest);
    let big = format!(
        r#"{{"type":"edit","room":"a","id":"e","target":1,"body":"{}"}}"#,
        "€".repeat(1366)
    );
    assert_eq!(code(&big), ErrorCode::TooLarge, "4098 bytes");
    assert_eq!(code(r#"{"type":"read","room":"a"}"#), ErrorCode::BadRequest);
    assert_eq!(
        code(r#"{"type":"read","room":"a","seq":1.5}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(code(r#"{"type":"reads"}"#), ErrorCode::BadRequest);
}

#[test]
fn every_command_that_goes_onto_the_queue_has_its_id() {
    let cmd = |t: &str| parse_command(t).unwrap().command;
    for frame in [
        r#"{"type":"send","room":"a","id":"k","body":"x"}"#,
        r#"{"type":"edit","room":"a","id":"k","target":1,"body":"x"}"#,
        r#"{"type":"delete","room":"a","id":"k","target":1}"#,
        r#"{"type":"react","room":"a","id":"k","target":1,"emoji":"🎉"}"#,
    ] {
        assert_eq!(cmd(frame).id(), Some(&id("k")), "{frame}");
    }
    assert_eq!(
        cmd(r#"{"type":"read","room":"a","seq":1,"id":"k"}"#).id(),
        None
    );
}

#[test]
fn read_state_events_match_the_contract() {
    let room = lobby();
    let ev = ServerEvent::Read {
        room: &room,
        seq: 43,
        unread: 2,
        reference: Some("r"),
    };
    assert_eq!(
        ev.to_json(),
        r#"{"type":"read","room":"lobby","seq":43,"unread":2,"ref":"r"}"#
    );
    let reads = [
        (UserId::parse("zoe").unwrap(), 45),
        (UserId::parse("alice").unwrap(), 43),
    ];
    let ev = ServerEvent::Reads {
        room: &room,
        reads: &reads,
        reference: None,
    };
    assert_eq!(
        ev.to_json(),
        r#"{"type":"reads","room":"lobby","reads":{"zoe":45,"alice":43}}"#,
        "in the order given (the store's: most advanced first)"
    );
    let ev = ServerEvent::Reads {
        room: &room,
        reads: &[],
        reference: Some("q"),
    };
    assert_eq!(
        ev.to_json(),
        r#"{"type":"reads","room":"lobby","reads":{},"ref":"q"}"#
    );
    let e = CommandError::new(ErrorCode::NotFound, "no such message");
    assert_eq!(e.code.as_str(), "not_found");
}
