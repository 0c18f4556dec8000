//! Anonymous prepaid pads (issue [8], SPEC P1–P4, P8) under faults: one node on SQLite over a
//! fake clock, an operator selling pads at the counter (the tariff charges 3 minor units per
//! KiB, so frames move money), and holders (the proto crate's `pad::holder::Holder`, as the
//! wallet holds a pad) sending frames through a simulated network.
//!
//! Each step the seed picks one of: a holder with nothing in flight sends its next frame (a
//! free `show`, `noop` or `records`, a charged `collect`, a request the node burns — a
//! plaintext that does not decode, a forward to a provider the node does not know); the
//! network delivers one frame in flight (reordered across holders; sometimes dropped, sometimes
//! delivered twice, sometimes its answer lost); a holder whose frame went unanswered sends it
//! again byte for byte; a broken client sends a frame the node must refuse without a trace (a
//! flipped bit, another frame at a used offset, a frame ahead, a pad the node does not know);
//! the operator sells another pad; the clock moves; the node crashes and restarts from its
//! directory.
//!
//! After every step ([`Pads::check`]): no pad byte is handed out twice (each pad's record lines
//! take up ranges gapless from byte 64 and down ranges gapless from its end, and the cursors
//! never cross); each holder's chain is the node's, line for line, up to what it heard; no pad
//! value is below zero; every pad's debits are its record lines' and land in the pad clearing
//! account, whose balance is their sum (debits equal credits to the operator; providers come
//! with step 5 of the plan); at the end, after every holder's last frame is answered, the audit
//! passes.

use crate::Config;
use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tally_kernel::Id;
use tally_proto::pad::file::PadFile;
use tally_proto::pad::holder::Holder;
use tally_proto::pad::ids::MailboxAddress;
use tally_proto::pad::plain::{ProviderName, ReplyBody, Request};
use tally_proto::pad::record::{Line, Outcome};
use tally_service::pad::PadServiceError;
use tally_service::{Node, NodeConfig, Principal, ServiceError};
use tally_wire::pads::{PadSaleRequest, PadTariff};

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct PadsOutcome {
    /// Frames the node answered with a reply.
    pub taken: usize,
    /// Frames the node burned (authentic, refused).
    pub burned: usize,
    /// Frames answered again from the kept reply.
    pub replays: usize,
    /// Broken clients' frames refused without a trace.
    pub refused: usize,
    /// Frames the network dropped.
    pub dropped: usize,
    /// Frames delivered twice.
    pub duplicated: usize,
    /// Answers lost on the way back.
    pub answers_lost: usize,
    /// Charged frames refused for the pad's value.
    pub out_of_value: usize,
    /// Requests the holder did not send: its pad's bytes were used up.
    pub out_of_bytes: usize,
    /// Node crashes and restarts.
    pub crashes: usize,
    /// Pads sold.
    pub pads: usize,
    /// Minor units debited from pads.
    pub debited: i64,
    /// Posts taken (messages put in a mailbox).
    pub posted: usize,
    /// Messages collected by their mailbox's holder.
    pub collected: usize,
}

impl PadsOutcome {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &PadsOutcome) {
        self.taken += o.taken;
        self.burned += o.burned;
        self.replays += o.replays;
        self.refused += o.refused;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.answers_lost += o.answers_lost;
        self.out_of_value += o.out_of_value;
        self.out_of_bytes += o.out_of_bytes;
        self.crashes += o.crashes;
        self.pads += o.pads;
        self.debited += o.debited;
        self.posted += o.posted;
        self.collected += o.collected;
    }
}

impl std::fmt::Display for PadsOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pads, {} frames taken, {} burned ({} out of value), {} replays, {} refused, \
             {} out of bytes, {} dropped, {} duplicated, {} answers lost, {} crashes, {} minor \
             units debited, {} messages posted, {} collected",
            self.pads,
            self.taken,
            self.burned,
            self.out_of_value,
            self.replays,
            self.refused,
            self.out_of_bytes,
            self.dropped,
            self.duplicated,
            self.answers_lost,
            self.crashes,
            self.debited,
            self.posted,
            self.collected
        )
    }
}

type Step<T> = Result<T, String>;

fn unexpected(e: impl std::fmt::Display) -> String {
    format!("unexpected failure: {e}")
}

/// A pad's holder, and what the node sold.
struct PadHolder {
    file: PadFile,
    holder: Holder,
    /// Its mailbox address.
    mailbox: MailboxAddress,
    /// The post in flight: its body and the holder it is for (`None`: no such mailbox).
    posting: Option<(Vec<u8>, Option<usize>)>,
    /// The frame in flight (sent, not answered).
    in_flight: Option<Vec<u8>>,
    /// The holder's record lines.
    lines: Vec<Line>,
    value_account: Id,
    face_minor: i64,
}

/// The pads world.
pub struct Pads {
    config: Config,
    rng: StdRng,
    _dir: tempfile::TempDir,
    node_config: NodeConfig,
    clock: Arc<AtomicI64>,
    node: Node,
    admin: Principal,
    till: Id,
    clearing: Option<Id>,
    holders: Vec<PadHolder>,
    /// Every message body a holder sealed into a post, and the holder it is for.
    bodies: std::collections::HashMap<Vec<u8>, Option<usize>>,
    /// Every message id handed to a holder (a second hand-over is a failure).
    collected: std::collections::HashSet<[u8; 16]>,
    /// Frames in flight: (holder, bytes).
    network: Vec<(usize, Vec<u8>)>,
    keys: usize,
    trace: Vec<String>,
    outcome: PadsOutcome,
}

/// Runs one seed of the pads world.
pub async fn run_pads(config: Config) -> Result<PadsOutcome, crate::Failure> {
    let mut sim = Pads::new(config).await?;
    let mut step = 0;
    let result = async {
        while step < config.steps {
            sim.step().await?;
            sim.check().await?;
            step += 1;
        }
        sim.finish().await
    }
    .await;
    match result {
        Ok(()) => Ok(sim.outcome),
        Err(what) => Err(crate::Failure {
            seed: config.seed,
            step,
            what,
            trace: sim.trace.split_off(sim.trace.len().saturating_sub(20)),
        }),
    }
}

impl Pads {
    async fn new(config: Config) -> Result<Pads, crate::Failure> {
        let fail = |what: String| crate::setup_failure(config.seed, what);
        let dir = crate::scratch_dir().map_err(|e| fail(e.to_string()))?;
        let (clock, node_clock) = crate::fake_clock();
        let node_config = NodeConfig {
            clock: node_clock,
            ..NodeConfig::new(dir.path().join("node"))
        };
        let (node, admin_key) = Node::open(&node_config)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let admin_key = admin_key.ok_or_else(|| fail("no admin key".into()))?;
        let admin = node
            .authenticate(admin_key.expose())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let till = crate::settlement_account(&node, &admin)
            .await
            .map_err(fail)?;
        let tariff = PadTariff {
            byte_price_minor_per_kib: 3,
            post_price_minor: 0,
            commission_bps: 0,
        };
        node.pads()
            .set_tariff(&admin, "EUR", &tariff)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut sim = Pads {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            _dir: dir,
            node_config,
            clock,
            node,
            admin,
            till,
            clearing: None,
            holders: Vec::new(),
            bodies: std::collections::HashMap::new(),
            collected: std::collections::HashSet::new(),
            network: Vec::new(),
            keys: 0,
            trace: Vec::new(),
            outcome: PadsOutcome::default(),
        };
        for _ in 0..3 {
            sim.sell().await.map_err(fail)?;
        }
        Ok(sim)
    }

    fn note(&mut self, what: String) {
        self.trace.push(what);
    }

    /// The operator sells a pad: 4 to 32 KiB, a value of 2 to 60 minor units (some run out
    /// of value before bytes), one in four a session-key pad.
    async fn sell(&mut self) -> Step<()> {
        self.keys += 1;
        let key = format!("sale-{}", self.keys);
        let size = 4096 * self.rng.random_range(1..=8u64);
        let value = self.rng.random_range(2..=60i64);
        let mode = if self.rng.random_range(0..4) == 0 {
            "session_key"
        } else {
            "one_time"
        };
        let req = PadSaleRequest {
            from: self.till,
            value_minor: value,
            currency: "EUR".into(),
            size,
            mode: Some(mode.into()),
            node_url: "http://pads.sim".into(),
            allow: Vec::new(),
        };
        let (sold, _) = self
            .node
            .pads()
            .sell(&self.admin, &key, &req)
            .await
            .map_err(unexpected)?;
        // The same sale again answers the same pad and file.
        let (again, replayed) = self
            .node
            .pads()
            .sell(&self.admin, &key, &req)
            .await
            .map_err(unexpected)?;
        if !replayed || again.pad != sold.pad || again.file != sold.file {
            return Err("a repeated sale answered another pad".into());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&sold.file)
            .map_err(unexpected)?;
        let file = PadFile::decode(&bytes).map_err(unexpected)?;
        let view = self
            .node
            .pads()
            .view(&self.admin, &sold.pad)
            .await
            .map_err(unexpected)?;
        self.note(format!(
            "sold {} ({size} bytes, {value} minor, {mode})",
            sold.pad
        ));
        self.holders.push(PadHolder {
            holder: Holder::new(file.pad, file.bytes.size()),
            mailbox: file.bytes.mailbox(),
            posting: None,
            file,
            in_flight: None,
            lines: Vec::new(),
            value_account: view.value_account,
            face_minor: value,
        });
        self.outcome.pads += 1;
        Ok(())
    }

    async fn step(&mut self) -> Step<()> {
        match self.rng.random_range(0..100) {
            0..=34 => self.send().await,
            35..=64 => self.deliver().await,
            65..=74 => {
                self.resend();
                Ok(())
            }
            75..=82 => self.broken_client().await,
            83..=85 if self.holders.len() < 8 => self.sell().await,
            86..=92 => {
                let s = self.rng.random_range(1..=600);
                self.clock.fetch_add(s * 1_000_000, Ordering::SeqCst);
                self.note(format!("clock +{s} s"));
                Ok(())
            }
            93..=96 => self.crash().await,
            _ => Ok(()),
        }
    }

    /// A holder with nothing in flight seals its next request and sends it.
    async fn send(&mut self) -> Step<()> {
        let idle: Vec<usize> = (0..self.holders.len())
            .filter(|i| self.holders[*i].in_flight.is_none())
            .collect();
        if idle.is_empty() {
            return Ok(());
        }
        let i = idle[self.rng.random_range(0..idle.len())];
        let mut posting = None;
        let request = match self.rng.random_range(0..14) {
            // A post to a holder's mailbox (its own, sometimes), or to an address no pad has.
            10..=12 => {
                let to = self.rng.random_range(0..self.holders.len() + 1);
                let body = format!("message {} from {i}", self.bodies.len()).into_bytes();
                let (address, recipient) = match self.holders.get(to) {
                    Some(h) if to < self.holders.len() && self.rng.random_range(0..8) > 0 => {
                        (h.mailbox, Some(to))
                    }
                    _ => (MailboxAddress([0x5A; 16]), None),
                };
                posting = Some((body.clone(), recipient));
                Request::Post {
                    to: address,
                    show_from: self.rng.random_range(0..2) == 0,
                    body,
                }
            }
            13 => Request::Collect { max_len: 4096 },
            0..=2 => Request::Show,
            3 => Request::Noop,
            4 => Request::Records {
                from: self.rng.random_range(0..4),
                max: self.rng.random_range(1..4),
            },
            5..=7 => Request::Collect {
                max_len: self.rng.random_range(256..=1024),
            },
            8 => Request::Forward {
                provider: ProviderName::new("nobody").map_err(unexpected)?,
                escrow: false,
                body: vec![1; self.rng.random_range(0..600)],
            },
            _ => Request::Noop,
        };
        let h = &self.holders[i];
        // One frame in ten is a plaintext that does not decode (the node burns it).
        let sealed = if self.rng.random_range(0..10) == 0 {
            h.holder.seal_plain(&h.file.bytes, &[0xEE; 256], 256)
        } else {
            h.holder.seal(&h.file.bytes, &request, true)
        };
        match sealed {
            Ok(frame) => {
                self.note(format!(
                    "holder {i} sends {:?} at {}",
                    kind(&request),
                    h.holder.up_next
                ));
                if let Some((body, to)) = &posting {
                    self.bodies.insert(body.clone(), *to);
                }
                self.holders[i].posting = posting;
                self.holders[i].in_flight = Some(frame.clone());
                self.network.push((i, frame));
            }
            Err(_) => self.outcome.out_of_bytes += 1,
        }
        Ok(())
    }

    /// The network delivers one frame in flight (any of them): sometimes drops it, delivers it
    /// twice, or loses the answer.
    async fn deliver(&mut self) -> Step<()> {
        if self.network.is_empty() {
            return Ok(());
        }
        let at = self.rng.random_range(0..self.network.len());
        let fault = self.rng.random_range(0..10);
        let (i, frame) = if fault == 1 {
            self.outcome.duplicated += 1;
            self.network[at].clone()
        } else {
            self.network.swap_remove(at)
        };
        if fault == 0 {
            self.outcome.dropped += 1;
            self.note(format!("drop holder {i}'s frame"));
            return Ok(());
        }
        let answer = self.node.pads().frame(&frame).await;
        if fault == 2 {
            self.outcome.answers_lost += 1;
            self.note(format!("holder {i}'s answer lost"));
            return match answer {
                Ok(_) | Err(ServiceError::Pad(PadServiceError::Refused(_))) => Ok(()),
                Err(e) => Err(format!("a frame in flight refused: {e}")),
            };
        }
        self.answer(i, &frame, answer)
    }

    /// The holder takes the node's answer to `frame`, if that is its frame in flight (a
    /// duplicate of an answered frame is answered again, and the holder has moved on).
    fn answer(
        &mut self,
        i: usize,
        frame: &[u8],
        answer: Result<tally_service::pad::FrameAnswer, ServiceError>,
    ) -> Step<()> {
        let h = &mut self.holders[i];
        let current = h.in_flight.as_deref() == Some(frame);
        match answer {
            Ok(a) => {
                if a.replayed {
                    self.outcome.replays += 1;
                }
                if !current {
                    return Ok(());
                }
                let (reply, line) = h
                    .holder
                    .answered(&h.file.bytes, frame, &a.reply)
                    .map_err(|e| format!("holder {i} refused the node's reply: {e}"))?;
                h.lines.push(line);
                h.in_flight = None;
                match reply.body {
                    ReplyBody::Post { .. } => {
                        if h.posting.take().is_some_and(|(_, to)| to.is_none()) {
                            return Err(format!("holder {i}'s post to no mailbox was taken"));
                        }
                        self.outcome.posted += 1;
                    }
                    ReplyBody::Collect { messages, .. } => {
                        for m in messages {
                            // Only the holder the message is for collects it, once.
                            if !self.collected.insert(m.id.0) {
                                return Err(format!("{} handed over twice", m.id));
                            }
                            match self.bodies.get(&m.body) {
                                Some(Some(to)) if *to == i => {}
                                other => {
                                    return Err(format!(
                                        "holder {i} collected a message for {other:?}"
                                    ));
                                }
                            }
                            self.outcome.collected += 1;
                        }
                    }
                    _ => {}
                }
                self.outcome.taken += 1;
                self.outcome.debited += line.debit_minor;
                self.trace
                    .push(format!("holder {i} answered, debit {}", line.debit_minor));
            }
            Err(ServiceError::Pad(PadServiceError::Refused(r))) => {
                if !current {
                    return Ok(());
                }
                let line = h.holder.burned(frame, &r).map_err(unexpected)?;
                h.lines.push(line);
                h.in_flight = None;
                h.posting = None;
                self.outcome.burned += 1;
                if line.outcome == Outcome::PadValueExhausted {
                    self.outcome.out_of_value += 1;
                }
                self.trace.push(format!("holder {i} burned: {r:?}"));
            }
            // A holder's own frame, in place, is never refused otherwise; a stale duplicate
            // of it may find its reply no longer kept (16 frames later).
            Err(ServiceError::Pad(PadServiceError::OffsetUsed { .. })) if !current => {}
            Err(e) => return Err(format!("holder {i}'s frame refused: {e}")),
        }
        Ok(())
    }

    /// A holder whose frame is not on the network (dropped, or its answer lost) sends it
    /// again, byte for byte.
    fn resend(&mut self) {
        let waiting: Vec<usize> = (0..self.holders.len())
            .filter(|i| {
                self.holders[*i].in_flight.is_some() && !self.network.iter().any(|(j, _)| j == i)
            })
            .collect();
        if let Some(&i) = waiting.get(self.rng.random_range(0..waiting.len().max(1))) {
            let frame = self.holders[i].in_flight.clone().unwrap_or_default();
            self.note(format!("holder {i} sends its frame again"));
            self.network.push((i, frame));
        }
    }

    /// A broken or hostile client: the node refuses its frame and nothing changes.
    async fn broken_client(&mut self) -> Step<()> {
        if self.holders.is_empty() {
            return Ok(());
        }
        let i = self.rng.random_range(0..self.holders.len());
        let h = &self.holders[i];
        let row = self
            .node
            .store()
            .pad(&h.file.pad.0)
            .await
            .map_err(unexpected)?
            .ok_or("a sold pad is missing")?;
        let kind = self.rng.random_range(0..4);
        let frame = match kind {
            // A bit flipped in a frame the holder might send.
            0 => {
                let Ok(mut f) = h.holder.seal(&h.file.bytes, &Request::Show, true) else {
                    return Ok(());
                };
                let at = self.rng.random_range(0..f.len());
                f[at] ^= 1 << self.rng.random_range(0..8);
                f
            }
            // Another frame at an offset already used.
            1 if h.holder.up_next > 64 => {
                let past = Holder {
                    up_next: 64,
                    ..h.holder
                };
                // No holder asks for line 999: these bytes were never sent.
                let request = Request::Records { from: 999, max: 3 };
                let Ok(f) = past.seal(&h.file.bytes, &request, true) else {
                    return Ok(());
                };
                f
            }
            // A frame ahead of the node's next free offset (the holder's may be behind it: its
            // frame in flight may be taken).
            2 => {
                let ahead = Holder {
                    up_next: row.up_next + 288,
                    down_low: row.down_low,
                    ..h.holder
                };
                let Ok(f) = ahead.seal(&h.file.bytes, &Request::Noop, true) else {
                    return Ok(());
                };
                f
            }
            // A pad the node does not know (the holder's bytes, another id).
            _ => {
                let other = Holder {
                    pad: tally_proto::pad::ids::PadId([0xAB; 16]),
                    ..h.holder
                };
                let Ok(f) = other.seal(&h.file.bytes, &Request::Show, true) else {
                    return Ok(());
                };
                f
            }
        };
        if h.in_flight.as_deref() == Some(&frame[..]) {
            return Ok(());
        }
        let before = self
            .node
            .store()
            .pad(&h.file.pad.0)
            .await
            .map_err(unexpected)?;
        let seq = self.node.store().journal_head().await.map_err(unexpected)?;
        let answer = self.node.pads().frame(&frame).await;
        let refused = matches!(
            answer,
            Err(ServiceError::Pad(
                PadServiceError::MalformedFrame(_)
                    | PadServiceError::NotAuthentic
                    | PadServiceError::OffsetUsed { .. }
                    | PadServiceError::OffsetAhead { .. }
                    | PadServiceError::BytesExhausted { .. }
            ))
        );
        if !refused {
            return Err(format!("a broken frame ({kind}) was answered: {answer:?}"));
        }
        let after = self
            .node
            .store()
            .pad(&h.file.pad.0)
            .await
            .map_err(unexpected)?;
        let seq_after = self.node.store().journal_head().await.map_err(unexpected)?;
        if before != after || seq != seq_after {
            return Err(format!(
                "a refused frame ({kind}) changed the pad or the journal"
            ));
        }
        self.outcome.refused += 1;
        self.note(format!("broken frame {kind} at holder {i}'s pad refused"));
        Ok(())
    }

    async fn crash(&mut self) -> Step<()> {
        self.note("crash and restart".into());
        self.outcome.crashes += 1;
        self.node = crate::reopen(&self.node, &self.node_config).await?;
        Ok(())
    }

    /// The invariants, after every step.
    async fn check(&mut self) -> Step<()> {
        let store = self.node.store();
        let mut total_debits = 0;
        for (i, h) in self.holders.iter().enumerate() {
            let pad = &h.file.pad.0;
            let row = store
                .pad(pad)
                .await
                .map_err(unexpected)?
                .ok_or("a sold pad is missing")?;
            let size = h.file.bytes.size();
            let records = store
                .pad_records(pad, 0, 1_000_000)
                .await
                .map_err(unexpected)?;
            // No pad byte twice: up ranges gapless from 64, down ranges gapless from the end.
            let (mut up, mut down) = (64u64, size);
            let mut debits = 0;
            for (n, r) in records.iter().enumerate() {
                let bytes: [u8; 65] = r.line[..].try_into().map_err(unexpected)?;
                let line = Line::from_bytes(&bytes).ok_or("a stored line does not decode")?;
                if line.up_offset != up || r.n != n as u64 {
                    return Err(format!(
                        "pad {i}: line {n} starts at {} not {up}",
                        line.up_offset
                    ));
                }
                up += u64::from(line.up_len) + 32;
                if line.outcome == Outcome::Taken {
                    let end = line.down_offset + u64::from(line.down_len) + 32;
                    if end != down {
                        return Err(format!("pad {i}: reply {n} ends at {end} not {down}"));
                    }
                    down = line.down_offset;
                }
                if up > down {
                    return Err(format!("pad {i}: the cursors crossed at line {n}"));
                }
                debits += line.debit_minor;
                // The holder's lines are the node's, as far as it heard.
                if let Some(mine) = h.lines.get(n)
                    && *mine != line
                {
                    return Err(format!("pad {i}: the holder's line {n} differs"));
                }
            }
            if (row.up_next, row.down_low) != (up, down) {
                return Err(format!(
                    "pad {i}: cursors {:?} but lines say {:?}",
                    (row.up_next, row.down_low),
                    (up, down)
                ));
            }
            if h.lines.len() > records.len()
                || (h.in_flight.is_none() && h.lines.len() != records.len())
            {
                return Err(format!(
                    "pad {i}: the holder has {} lines, the node {}",
                    h.lines.len(),
                    records.len()
                ));
            }
            // Value never below zero, and the debits are the lines'.
            let account = store
                .account(h.value_account)
                .await
                .map_err(unexpected)?
                .ok_or("a pad's value account is missing")?;
            if account.available_minor().unwrap_or(-1) < 0 || account.balance_minor() < 0 {
                return Err(format!("pad {i}: value below zero"));
            }
            if h.face_minor - account.balance_minor() != debits {
                return Err(format!(
                    "pad {i}: {} debited, lines say {debits}",
                    h.face_minor - account.balance_minor()
                ));
            }
            total_debits += debits;
            // The twin's used bytes are destroyed: a one-time pad keeps chunk 0 and the chunks
            // with a byte still unused, no more, no fewer.
            if h.file.bytes.mode() == tally_proto::pad::file::Mode::OneTime {
                let c = tally_service::pad::CHUNK_LEN;
                let chunks = size.div_ceil(c);
                let gone_low = (up / c).saturating_sub(1);
                let gone_high = chunks - down.div_ceil(c);
                let left = store.pad_chunk_count(pad).await.map_err(unexpected)?;
                if left != chunks - gone_low - gone_high {
                    return Err(format!(
                        "pad {i}: {left} twin chunks, {} expected",
                        chunks - gone_low - gone_high
                    ));
                }
            }
        }
        // Every debit is in the clearing account (nothing is paid out yet).
        let clearing = match self.clearing {
            Some(c) => c,
            None => {
                let c = store
                    .pad_currency(tally_kernel::Currency::from_code("EUR").map_err(unexpected)?)
                    .await
                    .map_err(unexpected)?
                    .ok_or("no pad clearing account")?;
                self.clearing = Some(c.clearing_account);
                c.clearing_account
            }
        };
        let c = store
            .account(clearing)
            .await
            .map_err(unexpected)?
            .ok_or("the clearing account is missing")?;
        if c.balance_minor() != total_debits {
            return Err(format!(
                "clearing holds {}, pads were debited {total_debits}",
                c.balance_minor()
            ));
        }
        Ok(())
    }

    /// Every holder's frame in flight is delivered without faults; then the holders' records
    /// are the node's and the audit passes.
    async fn finish(&mut self) -> Step<()> {
        self.network.clear();
        for i in 0..self.holders.len() {
            if let Some(frame) = self.holders[i].in_flight.clone() {
                let answer = self.node.pads().frame(&frame).await;
                self.answer(i, &frame, answer)?;
            }
        }
        self.check().await?;
        if self.holders.iter().any(|h| h.in_flight.is_some()) {
            return Err("a frame stayed unanswered".into());
        }
        // Every message posted is handed over once or still waits: the relay released them
        // all an hour later, and each holder collects what its pad's bytes allow.
        self.clock.fetch_add(3_600_000_000, Ordering::SeqCst);
        for i in 0..self.holders.len() {
            for _ in 0..16 {
                let h = &self.holders[i];
                let Ok(frame) =
                    h.holder
                        .seal(&h.file.bytes, &Request::Collect { max_len: 4096 }, true)
                else {
                    break;
                };
                self.holders[i].in_flight = Some(frame.clone());
                let before = self.outcome.collected;
                let answer = self.node.pads().frame(&frame).await;
                self.answer(i, &frame, answer)?;
                if self.outcome.collected == before {
                    break;
                }
            }
        }
        let waiting = self
            .node
            .store()
            .pad_messages_waiting()
            .await
            .map_err(unexpected)?;
        if waiting as usize + self.outcome.collected != self.outcome.posted {
            return Err(format!(
                "{} posted, {} collected, {waiting} waiting",
                self.outcome.posted, self.outcome.collected
            ));
        }
        let audit = self.node.audit(&self.admin).await.map_err(unexpected)?;
        if !audit.ok() {
            return Err(format!(
                "the audit found problems: {:?}",
                audit.ledger.problems
            ));
        }
        let _ = self.config;
        Ok(())
    }
}

fn kind(r: &Request) -> &'static str {
    match r {
        Request::Show => "show",
        Request::Noop => "noop",
        Request::Records { .. } => "records",
        Request::Collect { .. } => "collect",
        Request::Forward { .. } => "forward",
        Request::Post { .. } => "post",
        _ => "other",
    }
}
