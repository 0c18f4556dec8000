//! Pads through the real binary (issue [8]): the operator sells pads at the counter, holders
//! send frames with `tally pad show` (no API key), a lost answer is resent and answered once,
//! and a node killed amid bursts of frames loses none and hands out no pad byte twice.

mod common;

use common::holder::{Holder, post_frame};
use common::{Server, assert_audit_passes, cli, field, ok, outcome, tally_for};
use std::path::Path;
use tally_proto::pad::file::PadFile;
use tally_proto::pad::plain::{ReplyBody, Request};

/// A node with a till (an unbounded settlement account) and a tariff of 2 minor units per KiB.
fn node(dir: &Path) -> (Server, String) {
    node_with(dir, &[], &[])
}

/// [`node`] started with `serve` flags, its tariff with `tariff` flags as well.
fn node_with(dir: &Path, serve: &[&str], tariff: &[&str]) -> (Server, String) {
    let server = Server::start(&dir.join("data"), serve);
    let key = server.admin_key.clone();
    let till = field(
        &ok(cli(
            &server,
            &key,
            &[
                "account",
                "open",
                "--currency",
                "EUR",
                "--kind",
                "settlement",
                "--unbounded",
            ],
        )),
        "account",
    )
    .to_string();
    let mut args = vec!["pad", "tariff", "EUR", "--byte-price", "2"];
    args.extend_from_slice(tariff);
    ok(cli(&server, &key, &args));
    (server, till)
}

/// A retailer `kiosk` with its own key and an account funded with 20.00 EUR from the till:
/// (its key, its account).
fn retailer(server: &Server, till: &str) -> (String, String) {
    let kiosk = field(
        &ok(cli(
            server,
            &server.admin_key,
            &[
                "api-key", "create", "--role", "merchant", "--owner", "kiosk",
            ],
        )),
        "key",
    )
    .to_string();
    let cash = field(
        &ok(cli(
            server,
            &kiosk,
            &["account", "open", "--currency", "EUR"],
        )),
        "account",
    )
    .to_string();
    let args = [
        "transfer",
        "--from",
        till,
        "--to",
        &cash,
        "--amount",
        "20.00 EUR",
    ];
    ok(cli(server, &server.admin_key, &args));
    (kiosk, cash)
}

/// `tally pad buy` of `size` bytes, the wallet in `wallet`: the pad id.
fn buy(server: &Server, till: &str, wallet: &Path, size: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "pad", "buy", "--from", till, "--value", "5.00 EUR", "--size", size, "--wallet",
    ];
    let w = wallet.to_str().expect("utf-8");
    args.push(w);
    args.extend_from_slice(extra);
    field(&ok(cli(server, &server.admin_key, &args)), "pad").to_string()
}

/// `tally pad show --check` on `wallet`, run without an API key: (success, stdout, stderr).
fn show(server: &Server, wallet: &Path) -> (bool, String, String) {
    outcome(
        tally_for(server, "")
            .env_remove("TALLY_API_KEY")
            .args(["pad", "show", "--check", "--wallet"])
            .arg(wallet)
            .output()
            .expect("run tally"),
    )
}

/// The node's cursors of `pad` (`tally pad inspect`, the operator).
fn cursors(server: &Server, pad: &str) -> (u64, u64, u64) {
    let out = ok(cli(
        server,
        &server.admin_key,
        &["pad", "inspect", pad, "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    (
        v["up_next"].as_u64().expect("up"),
        v["down_low"].as_u64().expect("down"),
        v["records"].as_u64().expect("records"),
    )
}

/// `tally pad ARGS --wallet WALLET` run by a holder (no API key): (success, stdout, stderr).
fn pad_holder(server: &Server, wallet: &Path, args: &[&str]) -> (bool, String, String) {
    outcome(
        tally_for(server, "")
            .env_remove("TALLY_API_KEY")
            .args(["pad"])
            .args(args)
            .arg("--wallet")
            .arg(wallet)
            .output()
            .expect("run tally"),
    )
}

/// The value available on `pad` as the node keeps it (`tally pad inspect`, the operator).
fn available(server: &Server, pad: &str) -> i64 {
    let out = ok(cli(
        server,
        &server.admin_key,
        &["pad", "inspect", pad, "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    v["available_minor"].as_i64().expect("available")
}

fn wallet_state(wallet: &Path, pad: &str) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(wallet.join(format!("{pad}.json"))).expect("state"),
    )
    .expect("JSON")
}

#[test]
fn pads_are_sold_shown_and_checked_through_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, till) = node(dir.path());
    let wallet = dir.path().join("pads");

    // Sold once: the same key again answers the same pad and keeps the file.
    let pad = buy(
        &server,
        &till,
        &wallet,
        "16384",
        &["--idempotency-key", "sale-1"],
    );
    let again = cli(
        &server,
        &server.admin_key,
        &[
            "pad",
            "buy",
            "--from",
            &till,
            "--value",
            "5.00 EUR",
            "--size",
            "16384",
            "--wallet",
            wallet.to_str().expect("utf-8"),
            "--idempotency-key",
            "sale-1",
        ],
    );
    assert_eq!(field(&ok(again.clone()), "pad"), pad);
    assert!(again.2.contains("used before"), "{}", again.2);
    let file = std::fs::read(wallet.join(format!("{pad}.pad"))).expect("the pad file");
    let file = PadFile::decode(&file).expect("decodes");
    assert_eq!(file.bytes.size(), 16_384);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(wallet.join(format!("{pad}.pad")))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the pad file is the holder's only");

    // Shown (free), checked line by line, three times; the node's cursors are the wallet's.
    for round in 1..=3u64 {
        let (success, out, err) = show(&server, &wallet);
        assert!(success, "{out}\n{err}");
        assert!(out.contains("value     5.00 EUR"), "show is free: {out}");
        assert!(out.contains("agree"), "{out}");
        assert!(out.contains("every line agrees"), "{out}");
        let state = wallet_state(&wallet, &pad);
        let (up, down, records) = cursors(&server, &pad);
        assert_eq!(up, state["up_next"].as_u64().expect("up"));
        assert_eq!(down, state["down_low"].as_u64().expect("down"));
        assert_eq!(records, state["records"]["count"].as_u64().expect("count"));
        // Each round: a show, then one records request per earlier line page.
        assert!(records >= 2 * round - 1, "round {round}: {records} records");
    }

    // A session-key pad works the same; its file holds the seed, not the bytes.
    let keyed = dir.path().join("keyed");
    let pad2 = buy(&server, &till, &keyed, "16384", &["--mode", "session_key"]);
    let size = std::fs::metadata(keyed.join(format!("{pad2}.pad")))
        .expect("meta")
        .len();
    assert!(size < 200, "a session-key pad file is small: {size}");
    let (success, out, err) = show(&server, &keyed);
    assert!(success && out.contains("every line agrees"), "{out}\n{err}");

    // A pad's bytes run out: the wallet says so before sending anything.
    let small = dir.path().join("small");
    let pad3 = buy(&server, &till, &small, "4096", &[]);
    let mut last = (true, String::new(), String::new());
    for _ in 0..8 {
        last = show(&server, &small);
        if !last.0 {
            break;
        }
    }
    assert!(!last.0 && last.2.contains("buy a new pad"), "{last:?}");
    let (up, down, _) = cursors(&server, &pad3);
    let state = wallet_state(&small, &pad3);
    assert_eq!(
        (up, down),
        (
            state["up_next"].as_u64().expect("up"),
            state["down_low"].as_u64().expect("down")
        )
    );
    assert_audit_passes(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_resent_and_answered_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, till) = node(dir.path());
    let wallet = dir.path().join("pads");
    let pad = buy(&server, &till, &wallet, "16384", &[]);
    let file = PadFile::decode(&std::fs::read(wallet.join(format!("{pad}.pad"))).expect("file"))
        .expect("decodes");
    let holder = Holder::from_file(file);
    let http = reqwest::Client::new();

    // The wallet wrote the frame and sent it; the node took it; the answer was lost.
    let frame = holder.seal(&Request::Show);
    let (status, replayed, first) = post_frame(&http, &server.url, frame.clone())
        .await
        .expect("post");
    assert_eq!((status, replayed), (200, false));
    let state_path = wallet.join(format!("{pad}.json"));
    let mut state = wallet_state(&wallet, &pad);
    state["in_flight"] = serde_json::Value::String(hex::encode(&frame));
    std::fs::write(&state_path, serde_json::to_string(&state).expect("JSON")).expect("write");

    // The same frame again is answered the same, marked as a replay, and changes nothing.
    let (status, replayed, second) = post_frame(&http, &server.url, frame).await.expect("post");
    assert_eq!((status, replayed), (200, true));
    assert_eq!(first, second, "the kept reply");
    assert_eq!(cursors(&server, &pad).2, 1, "taken once");

    // The next command sends it again first, then its own show; both sides agree.
    let (success, out, err) = show(&server, &wallet);
    assert!(success, "{out}\n{err}");
    assert!(err.contains("sending again"), "{err}");
    assert!(out.contains("every line agrees"), "{out}");
    let state = wallet_state(&wallet, &pad);
    assert!(state["in_flight"].is_null());
    let (up, down, records) = cursors(&server, &pad);
    assert_eq!(up, state["up_next"].as_u64().expect("up"));
    assert_eq!(down, state["down_low"].as_u64().expect("down"));
    assert_eq!(records, state["records"]["count"].as_u64().expect("count"));
    assert_audit_passes(&server);
}

/// Three holders send bursts of frames on tasks of their own; the node is SIGKILLed once 30
/// frames are answered, amid the bursts, and started again on the same address. Each holder
/// resends its unanswered frame byte for byte (the node took it once, or not at all) and goes
/// on. At the end every holder's chain is the node's records, the ranges each saw are
/// disjoint, and the audit passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_survive_a_crash_of_the_node_and_no_byte_is_used_twice() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, till) = node(dir.path());
    let mut holders = Vec::new();
    for i in 0..3 {
        let wallet = dir.path().join(format!("w{i}"));
        let pad = buy(&server, &till, &wallet, "65536", &[]);
        let file =
            PadFile::decode(&std::fs::read(wallet.join(format!("{pad}.pad"))).expect("file"))
                .expect("decodes");
        holders.push((pad, Arc::new(Mutex::new(Holder::from_file(file)))));
    }
    let http = reqwest::Client::new();
    let listen = server.url.trim_start_matches("http://").to_string();
    let answered = Arc::new(AtomicUsize::new(0));

    // Each task: the next frame, sent until answered or the node is gone (then kept).
    let burst = |url: String, h: Arc<Mutex<Holder>>, pending: Option<Vec<u8>>, n: usize| {
        let http = http.clone();
        let answered = answered.clone();
        tokio::spawn(async move {
            let mut next = pending;
            for i in 0..n {
                let frame = next.take().unwrap_or_else(|| {
                    let request = if i % 3 == 0 {
                        Request::Noop
                    } else {
                        Request::Show
                    };
                    h.lock().expect("holder").seal(&request)
                });
                match post_frame(&http, &url, frame.clone()).await {
                    Ok((200, _, body)) => {
                        h.lock().expect("holder").answered(&frame, &body);
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok((status, _, body)) => {
                        panic!("{status}: {}", String::from_utf8_lossy(&body))
                    }
                    // The node died: this frame may or may not be taken; keep it.
                    Err(_) => return Some(frame),
                }
            }
            None
        })
    };
    let tasks: Vec<_> = holders
        .iter()
        .map(|(_, h)| burst(server.url.clone(), h.clone(), None, 1000))
        .collect();
    common::wait_until("30 frames answered", || {
        answered.load(Ordering::SeqCst) >= 30
    });
    server.kill_hard();
    let mut pending = Vec::new();
    for t in tasks {
        pending.push(t.await.expect("task"));
    }
    assert!(
        pending.iter().all(Option::is_some),
        "every burst was cut by the kill"
    );
    server = Server::start_on(&server.data.clone(), &listen, &[]);
    let tasks: Vec<_> = holders
        .iter()
        .zip(pending)
        .map(|((_, h), p)| burst(server.url.clone(), h.clone(), p, 10))
        .collect();
    for t in tasks {
        assert!(
            t.await.expect("task").is_none(),
            "the node answered after its restart"
        );
    }

    // The node's cursors and records are each holder's, line for line.
    for (pad, h) in &holders {
        let frame = {
            let h = h.lock().expect("holder");
            let (up, down, count) = cursors(&server, pad);
            assert_eq!((up, down), (h.up_next(), h.down_low()), "{pad}");
            assert_eq!(count, h.chain().count);
            h.seal(&Request::Show)
        };
        let (_, _, body) = post_frame(&http, &server.url, frame.clone())
            .await
            .expect("post");
        let mut h = h.lock().expect("holder");
        let reply = h.answered(&frame, &body);
        let ReplyBody::Show(s) = reply.body else {
            panic!("show")
        };
        assert_eq!(
            (s.records, s.record_hash),
            (h.chain().count, h.chain().hash)
        );
    }
    assert_audit_passes(&server);
}

/// Two holders and the relay (P5): A posts to B's mailbox, showing its address; the relay
/// releases it after its window; only B collects it, once; a post to an address no pad has is
/// burned without a debit; the audit passes.
#[test]
fn a_holder_posts_to_another_through_the_relay_and_only_it_collects_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, till) = node_with(
        dir.path(),
        &["--pad-relay-window", "1", "--pad-relay-delay", "1"],
        &["--post-price", "5"],
    );
    let (wa, wb) = (dir.path().join("a"), dir.path().join("b"));
    let pad_a = buy(&server, &till, &wa, "65536", &[]);
    let pad_b = buy(&server, &till, &wb, "1048576", &[]);
    let holder = |wallet: &Path, args: &[&str]| pad_holder(&server, wallet, args);
    let available = |pad: &str| available(&server, pad);
    let b_mailbox = field(&ok(holder(&wb, &["show"])), "mailbox").to_string();
    let a_mailbox = field(&ok(holder(&wa, &["show"])), "mailbox").to_string();

    let before = available(&pad_a);
    let out = ok(holder(
        &wa,
        &[
            "post",
            "--to",
            &b_mailbox,
            "--text",
            "hello B",
            "--show-from",
        ],
    ));
    assert!(out.contains(&format!("to {b_mailbox}")), "{out}");
    let debit = before - available(&pad_a);
    assert!(debit > 5, "the post price and its bytes: {debit}");

    // B collects until the relay releases the message (its window closes, then a delay).
    let mut got = String::new();
    common::wait_within(30, "the relay releases A's message", || {
        let (success, out, err) = holder(&wb, &["collect", "--max-len", "256"]);
        assert!(success, "{out}\n{err}");
        got = out;
        got.contains("hello B")
    });
    assert!(got.contains(&format!("from {a_mailbox}")), "{got}");
    assert!(got.contains("collected 1 message(s)"), "{got}");
    // Handed over once: gone now; and never to A.
    let again = ok(holder(&wb, &["collect", "--max-len", "256"]));
    assert!(
        again.contains("collected 0 message(s), 0 more waiting"),
        "{again}"
    );
    let a_side = ok(holder(&wa, &["collect", "--max-len", "256"]));
    assert!(a_side.contains("collected 0 message(s)"), "{a_side}");

    // A post to an address no pad has: burned, nothing debited.
    let before = available(&pad_a);
    let (success, _, err) = holder(
        &wa,
        &[
            "post",
            "--to",
            "mbx-00000000000000000000000000000000",
            "--text",
            "lost",
        ],
    );
    assert!(!success && err.contains("unknown_mailbox"), "{err}");
    assert_eq!(available(&pad_a), before, "a burned frame costs nothing");
    // The records still agree on both sides, the burned line included.
    for w in [&wa, &wb] {
        let (success, out, err) = show(&server, w);
        assert!(success && out.contains("every line agrees"), "{out}\n{err}");
    }
    let _ = pad_b;
    assert_audit_passes(&server);
}

/// Vouchers (P1): the operator issues cards for a retailer (the same key prints the same
/// cards), the retailer sells one at the till (its account pays the float), a customer with
/// no API key redeems it for a pad (again: the same pad), an unsold card and a mistyped code
/// are refused, a stolen blank card is cancelled and never sells; the audit passes.
#[test]
fn vouchers_are_sold_at_the_till_and_redeemed_anonymously_for_a_pad() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, till) = node(dir.path());
    let admin = server.admin_key.clone();
    let (kiosk, cash) = retailer(&server, &till);
    let issue = || {
        ok(cli(
            &server,
            &admin,
            &[
                "voucher",
                "issue",
                "--retailer",
                "kiosk",
                "--value",
                "2.50 EUR",
                "--count",
                "3",
                "--idempotency-key",
                "cards-1",
            ],
        ))
    };
    let printed = issue();
    assert_eq!(issue(), printed, "the same key prints the same cards");
    let cards: Vec<(String, String)> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("voucher   "))
        .map(|l| {
            let (serial, code) = l.split_once("  code ").expect("serial and code");
            (serial.to_string(), code.to_string())
        })
        .collect();
    assert_eq!(cards.len(), 3, "{printed}");

    // Sold at the till: the kiosk's account pays the float.
    let out = ok(cli(
        &server,
        &kiosk,
        &["voucher", "sell", &cards[0].0, "--from", &cash],
    ));
    assert!(out.contains("state     sold"), "{out}");
    let shown = ok(cli(&server, &kiosk, &["account", "show", &cash]));
    assert!(shown.contains("17.50 EUR"), "{shown}");

    // Redeemed by anyone with the code, no API key; again (typed differently): the same pad.
    let wallet = dir.path().join("pads");
    let redeem = |code: &str| {
        outcome(
            tally_for(&server, "")
                .env_remove("TALLY_API_KEY")
                .args(["pad", "redeem", code, "--size", "16384", "--wallet"])
                .arg(&wallet)
                .output()
                .expect("run tally"),
        )
    };
    let first = ok(redeem(&cards[0].1));
    let pad = field(&first, "pad").to_string();
    assert!(first.contains("value     2.50 EUR"), "{first}");
    let typed = cards[0].1.to_lowercase().replace('-', " ");
    let again = redeem(&typed);
    assert_eq!(field(&ok(again.clone()), "pad"), pad);
    assert!(again.2.contains("used before"), "{}", again.2);
    let (success, out, err) = show(&server, &wallet);
    assert!(
        success && out.contains("value     2.50 EUR"),
        "{out}\n{err}"
    );

    // A card not sold yet, and a mistyped code: refused.
    let (success, _, err) = redeem(&cards[1].1);
    assert!(
        !success && err.contains("voucher_state") && err.contains("blank"),
        "{err}"
    );
    let mut mistyped = cards[1].1.clone().into_bytes();
    mistyped[0] = if mistyped[0] == b'A' { b'B' } else { b'A' };
    let (success, _, err) = redeem(std::str::from_utf8(&mistyped).expect("ascii"));
    assert!(!success && err.contains("invalid_request"), "{err}");

    // A stolen blank card: cancelled, it never sells.
    let out = ok(cli(&server, &admin, &["voucher", "cancel", &cards[2].0]));
    assert!(out.contains("state     cancelled"), "{out}");
    let (success, _, err) = cli(
        &server,
        &kiosk,
        &["voucher", "sell", &cards[2].0, "--from", &cash],
    );
    assert!(!success && err.contains("voucher_state"), "{err}");
    assert_audit_passes(&server);
}

/// Retail stock (P1, the seed's media): a blank pad takes no frames; the retailer activates it
/// at the till from its own account (again: the same); stock reported stolen is cancelled,
/// never activates, and its replacement does; the audit passes.
#[test]
fn blank_stock_is_activated_at_the_till_and_stolen_stock_never_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, till) = node(dir.path());
    let admin = server.admin_key.clone();
    let (kiosk, cash) = retailer(&server, &till);
    let media = dir.path().join("media");
    let media_s = media.to_str().expect("utf-8");
    let stock = || {
        let out = ok(cli(
            &server,
            &admin,
            &[
                "pad",
                "stock",
                "--retailer",
                "kiosk",
                "--size",
                "16384",
                "--out",
                media_s,
            ],
        ));
        field(&out, "serial").to_string()
    };
    let first = stock();
    let wallet = dir.path().join("pads");
    ok(outcome(
        tally_for(&server, "")
            .args(["pad", "import"])
            .arg(media.join(format!("{first}.pad")))
            .arg("--wallet")
            .arg(&wallet)
            .output()
            .expect("run tally"),
    ));
    // Blank: frames refused, nothing changes.
    let (success, _, err) = show(&server, &wallet);
    assert!(!success && err.contains("pad_not_active"), "{err}");

    // Activated at the till from the kiosk's account; again: the same.
    let activate = |serial: &str| {
        cli(
            &server,
            &kiosk,
            &[
                "pad", "activate", serial, "--from", &cash, "--value", "5.00 EUR",
            ],
        )
    };
    let out = ok(activate(&first));
    assert!(out.contains("state     active"), "{out}");
    let again = activate(&first);
    assert!(ok(again.clone()).contains("state     active"));
    assert!(again.2.contains("used before"), "{}", again.2);
    let shown = ok(cli(&server, &kiosk, &["account", "show", &cash]));
    assert!(shown.contains("15.00 EUR"), "activated once: {shown}");
    // The holder's frame left in flight goes now; the value is the pad's.
    let (success, out, err) = show(&server, &wallet);
    assert!(
        success && out.contains("value     5.00 EUR"),
        "{out}\n{err}"
    );
    assert!(out.contains("every line agrees"), "{out}");

    // Stolen stock: cancelled, never activates; its replacement does.
    let stolen = stock();
    let out = ok(cli(
        &server,
        &kiosk,
        &["pad", "cancel-stock", &stolen, "--out", media_s],
    ));
    let replacement = field(&out, "serial").to_string();
    assert_ne!(replacement, stolen);
    let (success, _, err) = activate(&stolen);
    assert!(!success && err.contains("invalid_request"), "{err}");
    ok(activate(&replacement));
    let shown = ok(cli(&server, &kiosk, &["account", "show", &cash]));
    assert!(shown.contains("10.00 EUR"), "{shown}");
    assert_audit_passes(&server);
}

/// PIN accounts (P6): a pad joins an account with its PIN (a wrong one is refused and counted);
/// the lost pad is cancelled with the PIN, takes no more frames, and its value goes into the
/// account, which buys a new pad; another account cannot touch it; five wrong PINs lock an
/// account even against the right one; the audit passes.
#[test]
fn a_lost_pad_of_a_pin_account_is_cancelled_and_its_value_restored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, till) = node(dir.path());
    let anonymous = |args: &[&str]| {
        outcome(
            tally_for(&server, "")
                .env_remove("TALLY_API_KEY")
                .args(args)
                .output()
                .expect("run tally"),
        )
    };
    let account = field(
        &ok(anonymous(&["pad", "account", "open", "--pin", "482913"])),
        "account",
    )
    .to_string();
    let wallet = dir.path().join("pads");
    let w = wallet.to_str().expect("utf-8");
    let pad = buy(&server, &till, &wallet, "16384", &[]);

    let (success, _, err) = anonymous(&["pad", "join", &account, "--pin", "000000", "--wallet", w]);
    assert!(!success && err.contains("pin_wrong"), "{err}");
    ok(anonymous(&[
        "pad", "join", &account, "--pin", "482913", "--wallet", w,
    ]));
    let (success, out, err) = show(&server, &wallet);
    assert!(success && out.contains("every line agrees"), "{out}\n{err}");
    let holder_show = |wallet: &Path| {
        outcome(
            tally_for(&server, "")
                .env_remove("TALLY_API_KEY")
                .args(["pad", "show", "--wallet"])
                .arg(wallet)
                .output()
                .expect("run tally"),
        )
    };
    let available = |pad: &str| available(&server, pad);
    let left = available(&pad);
    assert!(
        left > 0 && left < 500,
        "the join's bytes were charged: {left}"
    );

    // Another account cannot cancel it.
    let other = field(
        &ok(anonymous(&["pad", "account", "open", "--pin", "111111"])),
        "account",
    )
    .to_string();
    let (success, _, err) =
        anonymous(&["pad", "account", "cancel", &other, &pad, "--pin", "111111"]);
    assert!(!success && err.contains("not_found"), "{err}");

    // Lost: cancelled with the PIN; its value is the account's; it takes no more frames.
    let out = ok(anonymous(&[
        "pad", "account", "cancel", &account, &pad, "--pin", "482913",
    ]));
    assert!(
        out.contains(&format!("value     {}.{:02} EUR", left / 100, left % 100)),
        "{out}"
    );
    assert_eq!(available(&pad), 0);
    let (success, _, err) = show(&server, &wallet);
    assert!(!success && err.contains("pad_not_active"), "{err}");

    // A new pad bought from the account's value.
    let fresh = dir.path().join("fresh");
    let out = ok(anonymous(&[
        "pad",
        "account",
        "buy",
        &account,
        "--pin",
        "482913",
        "--value",
        "2.00 EUR",
        "--size",
        "16384",
        "--wallet",
        fresh.to_str().expect("utf-8"),
    ]));
    assert!(out.contains("value     2.00 EUR"), "{out}");
    let shown = ok(anonymous(&[
        "pad", "account", "show", &account, "--pin", "482913",
    ]));
    let rest = left - 200;
    assert!(
        shown.contains(&format!("{}.{:02} EUR", rest / 100, rest % 100)),
        "{shown}"
    );

    // The new pad belongs to the account; it moves to a third one with the node's receipt.
    let third = field(
        &ok(anonymous(&["pad", "account", "open", "--pin", "222222"])),
        "account",
    )
    .to_string();
    let bought = ok(holder_show(&fresh));
    let fresh_pad = field(&bought, "pad").to_string();
    let receipt = dir.path().join("transfer.json");
    ok(anonymous(&[
        "pad",
        "account",
        "transfer",
        &account,
        &fresh_pad,
        "--to",
        &third,
        "--pin",
        "482913",
        "--receipt",
        receipt.to_str().expect("utf-8"),
    ]));
    let signed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&receipt).expect("receipt")).expect("JSON");
    assert_eq!(signed["domain"], "tally/pad-transfer/v1");
    let body: serde_json::Value =
        serde_json::from_str(signed["bytes"].as_str().expect("bytes")).expect("body");
    assert_eq!(
        (body["from"].as_str(), body["to"].as_str()),
        (Some(account.as_str()), Some(third.as_str()))
    );
    assert_eq!(body["value"]["minor"], 200);
    // Gone from the first account; the third cancels it into its own value.
    let (success, _, err) = anonymous(&[
        "pad", "account", "cancel", &account, &fresh_pad, "--pin", "482913",
    ]);
    assert!(!success && err.contains("not_found"), "{err}");
    let out = ok(anonymous(&[
        "pad", "account", "cancel", &third, &fresh_pad, "--pin", "222222",
    ]));
    assert!(out.contains("value     2.00 EUR"), "{out}");

    // Brute force: four wrong PINs count down, the fifth locks, and then the right one fails.
    for left in (1..=4).rev() {
        let (success, _, err) = anonymous(&["pad", "account", "show", &other, "--pin", "999999"]);
        assert!(
            !success && err.contains("pin_wrong") && err.contains(&format!("{left} attempts left")),
            "{err}"
        );
    }
    let (success, _, err) = anonymous(&["pad", "account", "show", &other, "--pin", "999999"]);
    assert!(!success && err.contains("pin_locked"), "{err}");
    let (success, _, err) = anonymous(&["pad", "account", "show", &other, "--pin", "111111"]);
    assert!(
        !success && err.contains("pin_locked"),
        "locked against the right PIN too: {err}"
    );
    assert_audit_passes(&server);
}

/// Providers (P3, P4, P7), with two holders and one provider on loopback: the provider
/// registers its price and webhook; holder A (its pad allowed only `echo`) sends a request,
/// which reaches the webhook through the relay signed and without the pad's id; the provider's
/// reply comes into A's mailbox, once; a provider off a pad's allow-list (set at the sale, or
/// by its PIN account) and an unknown one are refused with no debit; B's escrowed requests
/// are paid when released, refused (price back, bytes kept) when the provider never answers
/// and when the operator refuses a dispute; settlement pays the provider its prices less the
/// commission and the operator the rest, once; the audit passes.
#[test]
fn holders_reach_a_provider_through_the_relay_and_the_clearing_pays_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hook, hooks) = common::webhook_receiver();
    let channels = dir.path().join("channels.json");
    std::fs::write(
        &channels,
        serde_json::json!({
            "webhook": {"secret": "provider-secret", "http": {"allow_private_addresses": true}}
        })
        .to_string(),
    )
    .expect("channels");
    let channels = channels.to_str().expect("utf-8").to_string();
    let (server, till) = node_with(
        dir.path(),
        &[
            "--pad-relay-window",
            "1",
            "--pad-relay-delay",
            "1",
            "--pad-escrow",
            "8",
            "--pad-settle-every",
            "3600",
            "--channels",
            &channels,
        ],
        &["--commission-bps", "1000"],
    );
    let admin = server.admin_key.clone();
    // The provider: a merchant with its own key and account.
    let echo = field(
        &ok(cli(
            &server,
            &admin,
            &[
                "api-key", "create", "--role", "merchant", "--owner", "echo-co",
            ],
        )),
        "key",
    )
    .to_string();
    let earnings = field(
        &ok(cli(
            &server,
            &echo,
            &["account", "open", "--currency", "EUR"],
        )),
        "account",
    )
    .to_string();
    let mut secrets = Vec::new();
    for name in ["echo", "other"] {
        let out = ok(cli(
            &server,
            &echo,
            &[
                "provider",
                "register",
                name,
                "--account",
                &earnings,
                "--price",
                "0.50 EUR",
                "--webhook",
                &hook,
            ],
        ));
        assert!(out.contains("price     0.50 EUR per request"), "{out}");
        secrets.push(field(&out, "secret").to_string());
    }
    // Each provider has a secret of its own, not the node's, and not shown to others.
    let echo_secret = secrets[0].clone();
    assert!(echo_secret.starts_with("whsec_") && echo_secret != secrets[1]);
    let shown = ok(cli(&server, &admin, &["provider", "show", "echo"]));
    assert!(!shown.contains("whsec_"), "{shown}"); // Another merchant cannot take the name.
    let (rival, rival_account) = retailer(&server, &till);
    let (success, _, err) = cli(
        &server,
        &rival,
        &[
            "provider",
            "register",
            "echo",
            "--account",
            &rival_account,
            "--price",
            "0.10 EUR",
            "--webhook",
            &hook,
        ],
    );
    assert!(!success && err.contains("another owner"), "{err}");

    let (wa, wb) = (dir.path().join("a"), dir.path().join("b"));
    let pad_a = buy(&server, &till, &wa, "65536", &["--allow", "echo"]);
    let pad_b = buy(&server, &till, &wb, "65536", &[]);
    let holder = |wallet: &Path, args: &[&str]| pad_holder(&server, wallet, args);
    let available = |pad: &str| available(&server, pad);
    // The webhook the provider got for `request`, its signature checked: its data.
    let webhook_for = |request: &str| -> serde_json::Value {
        let mut found = serde_json::Value::Null;
        common::wait_within(30, "the relay forwards the request", || {
            for (signature, body) in hooks.lock().expect("lock").iter() {
                let v: serde_json::Value = serde_json::from_str(body).expect("json");
                if v["data"]["request"] == request {
                    let verify = |secret: &[u8]| {
                        tally_channels::webhook::verify_webhook_signature(
                            secret,
                            signature,
                            body.as_bytes(),
                            tally_kernel::Timestamp::now().as_micros() / 1_000_000,
                            300,
                        )
                    };
                    verify(echo_secret.as_bytes()).expect("signed with the provider's secret");
                    assert!(
                        verify(b"provider-secret").is_err(),
                        "not with the node's own"
                    );
                    assert!(!body.contains(&pad_a) && !body.contains(&pad_b), "{body}");
                    found = v["data"].clone();
                    return true;
                }
            }
            false
        });
        found
    };
    let send = |wallet: &Path, provider: &str, text: &str, extra: &[&str]| {
        let mut args = vec!["send", "--provider", provider, "--text", text];
        args.extend_from_slice(extra);
        holder(wallet, &args)
    };
    let request_of = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("sent      "))
            .and_then(|l| l.split_whitespace().next())
            .expect("a request id")
            .to_string()
    };
    let state_of = |request: &str| {
        let out = ok(cli(
            &server,
            &echo,
            &["provider", "request", "echo", request],
        ));
        field(&out, "state").to_string()
    };

    // A's request: debited its bytes and the price; forwarded, answered, collected once.
    let before = available(&pad_a);
    let sent = ok(send(&wa, "echo", "what time is it", &[]));
    let req_a = request_of(&sent);
    let debit = before - available(&pad_a);
    assert!(debit > 50, "the price and the bytes: {debit}");
    let data = webhook_for(&req_a);
    let body = base64_decode(data["body"].as_str().expect("body"));
    assert_eq!(body, b"what time is it");
    assert_eq!(data["escrow"], false);
    let reply = |request: &str, extra: &[&str]| {
        let mut args = vec!["provider", "reply", "echo", "--request", request, "--text"];
        args.extend_from_slice(extra);
        cli(&server, &echo, &args)
    };
    let (success, out, _) = reply(&req_a, &["noon"]);
    assert!(success && out.contains("state     replied"), "{out}");
    let (success, _, err) = reply(&req_a, &["noon"]);
    assert!(success && err.contains("answered before"), "{err}");
    let mut got = String::new();
    common::wait_within(30, "the relay releases the provider's reply", || {
        got = ok(holder(&wa, &["collect", "--max-len", "512"]));
        got.contains("noon")
    });
    assert!(
        got.contains(&format!("from provider echo, in reply to {req_a}")),
        "{got}"
    );
    let again = ok(holder(&wa, &["collect", "--max-len", "256"]));
    assert!(again.contains("collected 0 message(s)"), "{again}");

    // Off the allow-list, and unknown: burned, nothing debited.
    for (wallet, pad, provider) in [(&wa, &pad_a, "other"), (&wb, &pad_b, "nobody")] {
        let before = available(pad);
        let (success, _, err) = send(wallet, provider, "hello", &[]);
        assert!(!success && err.contains("provider_not_allowed"), "{err}");
        assert_eq!(available(pad), before, "a refused forward costs nothing");
    }
    // B's PIN account narrows its pad to `echo`: `other` is refused from then on.
    let account = field(
        &ok(cli(
            &server,
            "",
            &["pad", "account", "open", "--pin", "482913"],
        )),
        "account",
    )
    .to_string();
    ok(holder(&wb, &["join", &account, "--pin", "482913"]));
    let out = ok(cli(
        &server,
        "",
        &[
            "pad",
            "account",
            "allow",
            &account,
            &pad_b,
            "--provider",
            "echo",
            "--pin",
            "482913",
        ],
    ));
    assert!(out.contains("allow     echo"), "{out}");
    let (success, _, err) = send(&wb, "other", "hello", &[]);
    assert!(!success && err.contains("provider_not_allowed"), "{err}");

    // B's escrows: released after the provider performed → paid; never answered → refused
    // at the deadline; disputed and refused by the operator → refused. A refusal gives the
    // price back and keeps the bytes' debit.
    // The first is metered: the provider charges 0.30 of the 0.50 held; 0.20 comes back.
    let paid = request_of(&ok(send(&wb, "echo", "job 1", &["--escrow"])));
    assert_eq!(webhook_for(&paid)["escrow"], true);
    let (success, _, err) = reply(&paid, &["done", "--charge", "0.60 EUR"]);
    assert!(
        !success && err.contains("charge_minor"),
        "more than held: {err}"
    );
    assert!(ok(reply(&paid, &["done", "--charge", "0.30 EUR"])).contains("state     performed"));
    // The operator drops the commission meanwhile: the request keeps the rate of its time.
    ok(cli(
        &server,
        &admin,
        &[
            "pad",
            "tariff",
            "EUR",
            "--byte-price",
            "2",
            "--commission-bps",
            "0",
        ],
    ));
    let before = available(&pad_b);
    let released = ok(holder(&wb, &["release", &paid]));
    // What the release frame cost, as the holder was told (the sweeper may pay the escrow
    // before the node is asked).
    let release_cost = minor_units(field(&released, "debited"));
    common::wait_within(30, "the released escrow is paid", || {
        state_of(&paid) == "paid"
    });
    assert_eq!(
        available(&pad_b) - before + release_cost,
        20,
        "the metered charge's rest comes back"
    );
    let before = available(&pad_b);
    let silent = request_of(&ok(send(&wb, "echo", "job 2", &["--escrow"])));
    let cost = before - available(&pad_b);
    let disputed = request_of(&ok(send(&wb, "echo", "job 3", &["--escrow"])));
    ok(holder(&wb, &["dispute", &disputed]));
    let out = ok(cli(
        &server,
        &admin,
        &["provider", "verdict", &disputed, "--refuse"],
    ));
    assert!(out.contains("state     refused"), "{out}");
    let before_deadline = available(&pad_b);
    common::wait_within(30, "the escrows are resolved", || {
        state_of(&paid) == "paid" && state_of(&silent) == "refused"
    });
    assert_eq!(
        available(&pad_b) - before_deadline,
        50,
        "the silent provider's price comes back, its bytes' debit ({cost}) stays"
    );

    // Settlement: echo gets 45 for A's request (0.50 less 10 %) and 27 for B's metered
    // escrow (0.30 less the 10 % of its time), the operator the rest; once.
    let out = ok(cli(&server, &admin, &["provider", "settle"]));
    assert!(
        out.contains("paid      echo         0.72 EUR for 2 line(s)"),
        "{out}"
    );
    assert!(out.contains("paid      fees"), "{out}");
    let again = ok(cli(&server, &admin, &["provider", "settle"]));
    assert_eq!(again.trim(), "nothing to settle");
    let shown = ok(cli(&server, &echo, &["account", "show", &earnings]));
    assert!(shown.contains("balance   0.72 EUR"), "{shown}");

    // The reverse flow: the provider pays A by its request id (once per key), not knowing
    // the pad; and takes 0.50 EUR of its earnings as a new pad, which it spends.
    let before = available(&pad_a);
    let pay = [
        "provider",
        "pay",
        "echo",
        "--request",
        &req_a,
        "--amount",
        "0.20 EUR",
        "--idempotency-key",
        "refund-1",
    ];
    let out = ok(cli(&server, &echo, &pay));
    assert!(
        out.contains(&format!("paid      0.20 EUR to the holder of {req_a}")),
        "{out}"
    );
    let (success, _, err) = cli(&server, &echo, &pay);
    assert!(success && err.contains("used before"), "{err}");
    assert_eq!(available(&pad_a) - before, 20, "paid once");
    let pw = dir.path().join("provider-pads");
    let out = ok(cli(
        &server,
        &echo,
        &[
            "provider",
            "payout",
            "echo",
            "--value",
            "0.50 EUR",
            "--size",
            "16384",
            "--wallet",
            pw.to_str().expect("utf-8"),
        ],
    ));
    assert!(out.contains("value     0.50 EUR"), "{out}");
    let shown = ok(cli(&server, &echo, &["account", "show", &earnings]));
    assert!(shown.contains("balance   0.02 EUR"), "{shown}");
    let a_mailbox = field(&ok(holder(&wa, &["show"])), "mailbox").to_string();
    let out = ok(holder(
        &pw,
        &["post", "--to", &a_mailbox, "--text", "thanks"],
    ));
    assert!(out.contains("posted"), "{out}");
    for w in [&wa, &wb] {
        let (success, out, err) = show(&server, w);
        assert!(success && out.contains("every line agrees"), "{out}\n{err}");
    }
    assert_audit_passes(&server);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// Recovery without the PIN (P6, with the ceremony of [2]): a PIN account names subscriber
/// alice (the PIN, then alice's code: she agrees); a lost pad of the account is then cancelled
/// by alice's code alone, its value restored into the account, and the pad takes no more
/// frames. Without a code nothing happens; an account that named nobody, a subscriber without
/// a verified second channel, and a wrong PIN are refused.
#[test]
fn a_lost_pad_is_cancelled_by_the_recovery_subscribers_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, till) = node_with(dir.path(), &["--dev"], &[]);
    let admin = server.admin_key.clone();
    // Alice: a subscriber whose phone (a dev inbox) is her verified second channel.
    let alice = field(
        &ok(cli(
            &server,
            &admin,
            &[
                "api-key", "create", "--role", "customer", "--owner", "alice",
            ],
        )),
        "key",
    )
    .to_string();
    ok(cli(&server, &alice, &["subscriber", "add", "alice"]));
    ok(cli(&server, &admin, &["subscriber", "add", "bob"]));
    let out = ok(cli(
        &server,
        &alice,
        &[
            "subscriber",
            "address",
            "add",
            "alice",
            "--channel",
            "dev",
            "--address",
            "alice-phone",
        ],
    ));
    let session = field(&out, "session").to_string();
    let code = common::code_for(&server, &admin, "alice-phone", &session);
    ok(cli(
        &server,
        &alice,
        &["auth", "confirm", &session, "--code", &code],
    ));

    let wallet = dir.path().join("pads");
    let pad = buy(&server, &till, &wallet, "16384", &[]);
    let anonymous = |args: &[&str]| {
        outcome(
            tally_for(&server, "")
                .env_remove("TALLY_API_KEY")
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run tally"),
        )
    };
    let account = field(
        &ok(anonymous(&["pad", "account", "open", "--pin", "551177"])),
        "account",
    )
    .to_string();
    let w = wallet.to_str().expect("utf-8");
    ok(anonymous(&[
        "pad", "join", &account, "--pin", "551177", "--wallet", w,
    ]));
    // Runs a command that needs alice's code: refused without it, saying which session; her
    // code confirmed; then the same command again.
    let with_code = |args: &[&str]| {
        let (success, _, err) = anonymous(args);
        assert!(!success && err.contains("confirmation required"), "{err}");
        let session = err
            .split("tally auth confirm ")
            .nth(1)
            .and_then(|r| r.split('`').next())
            .unwrap_or_else(|| panic!("no session in {err}"))
            .to_string();
        let code = common::code_for(&server, &admin, "alice-phone", &session);
        ok(anonymous(&["auth", "confirm", &session, "--code", &code]));
        ok(anonymous(args))
    };

    // Refused: no recovery subscriber yet; a wrong PIN; a subscriber with no second channel.
    let (success, _, err) = anonymous(&["pad", "account", "cancel-by-code", &account, &pad]);
    assert!(!success && err.contains("no recovery subscriber"), "{err}");
    let (success, _, err) = anonymous(&[
        "pad", "account", "recovery", &account, "--user", "alice", "--pin", "000000",
    ]);
    assert!(!success && err.contains("pin_wrong"), "{err}");
    let (success, _, err) = anonymous(&[
        "pad", "account", "recovery", &account, "--user", "bob", "--pin", "551177",
    ]);
    assert!(!success && err.contains("second-channel"), "{err}");

    let out = with_code(&[
        "pad", "account", "recovery", &account, "--user", "alice", "--pin", "551177",
    ]);
    assert!(out.contains("recovery  alice"), "{out}");
    let left = available(&server, &pad);
    assert!(
        left > 0 && left < 500,
        "the join's bytes were debited: {left}"
    );
    let value = format!("value     {}.{:02} EUR", left / 100, left % 100);
    let out = with_code(&["pad", "account", "cancel-by-code", &account, &pad]);
    assert!(
        out.contains(&value),
        "the pad's value is in the account: {out}"
    );
    let (success, _, err) = show(&server, &wallet);
    assert!(!success && err.contains("pad_not_active"), "{err}");
    // Again: nothing more happens, no second code.
    let again = ok(anonymous(&[
        "pad",
        "account",
        "cancel-by-code",
        &account,
        &pad,
    ]));
    assert!(again.contains(&value), "{again}");
    assert_audit_passes(&server);
}

/// "1.23 EUR" as minor units.
fn minor_units(money: &str) -> i64 {
    let number = money.split_whitespace().next().expect("an amount");
    let (units, cents) = number.split_once('.').expect("two decimals");
    units.parse::<i64>().expect("units") * 100 + cents.parse::<i64>().expect("cents")
}

/// Key pairs (a kept seed option): every pad answers to its own key; a seller's long-term key
/// points at its pad's mailbox and later at a new pad's, and a buyer's posts to the key follow
/// it.
#[test]
fn posts_to_a_key_reach_the_pad_its_latest_claim_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, till) = node_with(
        dir.path(),
        &["--pad-relay-window", "1", "--pad-relay-delay", "1"],
        &[],
    );
    let (buyer, s1, s2) = (
        dir.path().join("buyer"),
        dir.path().join("s1"),
        dir.path().join("s2"),
    );
    for w in [&buyer, &s1, &s2] {
        buy(&server, &till, w, "65536", &[]);
    }
    let holder = |wallet: &Path, args: &[&str]| ok(pad_holder(&server, wallet, args));
    let collected = |wallet: &Path, text: &str| {
        let mut got = String::new();
        common::wait_within(30, "the relay releases the message", || {
            got.push_str(&holder(wallet, &["collect", "--max-len", "512"]));
            got.contains(text)
        });
        got
    };
    let seller_key = dir.path().join("seller.pem");
    let out = ok(cli(
        &server,
        "",
        &[
            "pad",
            "keygen",
            "--out",
            seller_key.to_str().expect("utf-8"),
        ],
    ));
    let key = field(&out, "key").to_string();
    let key_file = seller_key.to_str().expect("utf-8");
    let out = holder(&s1, &["alias", "--key", key_file]);
    let s1_mailbox = field(&holder(&s1, &["show"]), "mailbox").to_string();
    assert!(out.contains(&s1_mailbox), "{out}");

    // To the long-term key: the seller's first pad gets it.
    holder(&buyer, &["post", "--to", &key, "--text", "order 1"]);
    collected(&s1, "order 1");
    // To a pad's own key: that pad gets it.
    let s2_key = field(&holder(&s2, &["show"]), "key").to_string();
    holder(&buyer, &["post", "--to", &s2_key, "--text", "direct"]);
    collected(&s2, "direct");
    // The seller moves the key to its second pad: the next order follows, the first pad
    // gets nothing more.
    holder(&s2, &["alias", "--key", key_file]);
    holder(&buyer, &["post", "--to", &key, "--text", "order 2"]);
    collected(&s2, "order 2");
    let left = holder(&s1, &["collect", "--max-len", "512"]);
    assert!(
        left.contains("collected 0 message(s), 0 more waiting"),
        "{left}"
    );
    assert_audit_passes(&server);
}
