//! Anonymous prepaid pads (issue [8], SPEC P1–P4, P7, P8) under faults: one node on SQLite
//! over a fake clock, an operator selling pads at the counter (the tariff charges 3 minor
//! units per KiB, 1 per post and a commission of `COMMISSION_BPS` on providers' prices, so
//! frames move money), two service providers (one plain, one that holds every request in
//! escrow; escrows here last `ESCROW_S` seconds) and holders (the proto crate's
//! `pad::holder::Holder`, as the wallet holds a pad) sending frames through a simulated
//! network.
//!
//! Each step the seed picks one of: a holder with nothing in flight sends its next frame (a
//! free `show`, `noop` or `records`, a charged `collect` or `post`, a `forward` to a provider,
//! sometimes with the escrow flag, a `release` or `dispute` of one of its requests — or of
//! another pad's, which the node burns —, a request the node burns: a plaintext that does not
//! decode, a forward to a provider the node does not know); the network delivers one frame in
//! flight (reordered across holders; sometimes dropped, sometimes delivered twice, sometimes
//! its answer lost); a holder whose frame went unanswered sends it again byte for byte; a
//! broken client sends a frame the node must refuse without a trace (a flipped bit, another
//! frame at a used offset, a frame ahead, a pad the node does not know); a provider replies
//! to a forward (performed or not, sometimes metered below its price; sometimes twice, or to
//! one answered before: nothing more is sent; sometimes with a charge it may not ask:
//! refused); the operator decides a disputed escrow (or tries an undisputed one: refused),
//! settles the clearing account, changes a provider's price, or its sweeper passes (expired
//! holds, then due escrows and the settlement, as the node's workers do; sometimes the escrow
//! pass alone); the operator sells another pad; the clock moves (seconds, hours past escrow
//! deadlines, or rarely days past the ledger's holds); the node crashes and restarts from its
//! directory.
//!
//! After every step ([`Pads::check`]): no pad byte is handed out twice (each pad's record lines
//! take up ranges gapless from byte 64 and down ranges gapless from its end, and the cursors
//! never cross); each holder's chain is the node's, line for line, up to what it heard; no
//! value is below zero (pads, clearing, fees, providers, shares); each pad's debits are its
//! record lines' less what its resolved escrows gave back, posted or held into clearing (an
//! escrow's hold is the whole debit, pending while it is open); every debit has one charge
//! line whose shares add up to it (a forward's: the provider's share is its price at the time
//! less the commission; held while its escrow is open; a paid metered escrow's are the byte
//! debit and the commission on the charge, and the charge less it; a refused escrow's is the
//! byte debit alone, or nothing when the ledger's hold ran out); money is
//! conserved: the pads' posted debits are the clearing balance plus what settlements paid the
//! fee account and the providers, the clearing balance is what the charge lines not held still
//! owe, the pads' holds are clearing's pending credits and the held lines; the fee account and
//! each provider hold exactly the shares marked paid to them, and no provider more than its
//! forwards not refused earned; a forward's state only moves forward (sent → replied; held →
//! performed, declined, released, disputed → paid or refused); a sweep leaves no escrow due; a
//! settlement leaves clearing empty. At the end, after every holder's last frame is answered,
//! every dispute decided, every escrow resolved and the clearing settled, nothing is held or
//! owed, every message waits or was collected by its pad, and the audit passes.

use crate::Config;
use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tally_kernel::Id;
use tally_proto::pad::file::PadFile;
use tally_proto::pad::holder::Holder;
use tally_proto::pad::ids::{MailboxAddress, RequestId};
use tally_proto::pad::plain::{ProviderName, ReplyBody, Request, Sender};
use tally_proto::pad::record::{Line, Outcome};
use tally_service::pad::{PadServiceError, PadSettings};
use tally_service::{Node, NodeConfig, Principal, ServiceError};
use tally_wire::pads::{PadProviderRequest, PadReplyRequest, PadSaleRequest, PadTariff};

/// The operator's commission on providers' prices, basis points.
const COMMISSION_BPS: u32 = 2_000;
/// Seconds an escrowed request waits for its provider and holder (the ledger's hold lasts a
/// day longer).
const ESCROW_S: i64 = 3_600;

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
    /// Messages collected by their mailbox's holder (posts and providers' replies).
    pub collected: usize,
    /// Forwards to a provider the node took.
    pub forwards: usize,
    /// Of them, held in escrow.
    pub escrowed: usize,
    /// Providers' replies sent into a mailbox.
    pub replies: usize,
    /// Of them, metered: an escrowed request performed at a charge below its price.
    pub metered: usize,
    /// `release` frames taken.
    pub releases: usize,
    /// `dispute` frames taken.
    pub disputes: usize,
    /// The operator's verdicts on disputed escrows.
    pub verdicts: usize,
    /// Of them, verdicts to pay that came after the ledger's hold ran out: refused.
    pub verdicts_too_late: usize,
    /// Escrows resolved paid.
    pub escrows_paid: usize,
    /// Escrows resolved refused (the price back to the pad).
    pub escrows_refused: usize,
    /// Settlement transfers out of clearing (by `settle_all` and the sweeper).
    pub payouts: usize,
    /// Minor units settlements paid into the operator's fee account.
    pub fees_paid: i64,
    /// Minor units settlements paid to providers.
    pub providers_paid: i64,
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
        self.forwards += o.forwards;
        self.escrowed += o.escrowed;
        self.replies += o.replies;
        self.metered += o.metered;
        self.releases += o.releases;
        self.disputes += o.disputes;
        self.verdicts += o.verdicts;
        self.verdicts_too_late += o.verdicts_too_late;
        self.escrows_paid += o.escrows_paid;
        self.escrows_refused += o.escrows_refused;
        self.payouts += o.payouts;
        self.fees_paid += o.fees_paid;
        self.providers_paid += o.providers_paid;
    }
}

impl std::fmt::Display for PadsOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pads, {} frames taken, {} burned ({} out of value), {} replays, {} refused, \
             {} out of bytes, {} dropped, {} duplicated, {} answers lost, {} crashes, {} minor \
             units debited, {} messages posted, {} collected, {} forwards taken ({} escrowed), \
             {} provider replies ({} metered), {} releases, {} disputes, {} verdicts ({} to pay, \
             too late), {} escrows paid, {} refused, {} settlement payouts ({} minor units to \
             the operator's fees, {} to providers)",
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
            self.collected,
            self.forwards,
            self.escrowed,
            self.replies,
            self.metered,
            self.releases,
            self.disputes,
            self.verdicts,
            self.verdicts_too_late,
            self.escrows_paid,
            self.escrows_refused,
            self.payouts,
            self.fees_paid,
            self.providers_paid
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
    /// The frame in flight is a `release` or `dispute` of another pad's request: the node
    /// must burn it.
    foreign: bool,
    /// The holder's record lines.
    lines: Vec<Line>,
    /// The requests its forwards got (from their replies).
    requests: Vec<RequestId>,
    value_account: Id,
    face_minor: i64,
}

/// A registered provider.
struct SimProvider {
    name: String,
    /// The merchant account its shares are paid into.
    account: Id,
    /// Every request held in escrow.
    escrow: bool,
}

/// A forward as stored (`pad_forwards`).
struct ForwardSeen {
    request: [u8; 16],
    pad: [u8; 16],
    provider: String,
    escrow: bool,
    price_minor: i64,
    state: String,
    step_key: String,
    /// A metered escrow: what the provider charged of the price (`None`: all of it).
    charge_minor: Option<i64>,
}

/// A charge line as stored (`pad_charges`).
struct ChargeSeen {
    id: [u8; 16],
    pad: [u8; 16],
    provider: Option<String>,
    operator_minor: i64,
    provider_minor: i64,
    held: bool,
    fee_paid: bool,
    provider_paid: bool,
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
    providers: Vec<SimProvider>,
    /// Every message body a holder sealed into a post, and the holder it is for.
    bodies: HashMap<Vec<u8>, Option<usize>>,
    /// Every body a provider replied, and the holder, request and provider it is of.
    replies: HashMap<Vec<u8>, (usize, [u8; 16], String)>,
    /// Each forward's state when last checked (states only move forward).
    states: HashMap<[u8; 16], String>,
    /// `SIM_PADS_RACE_EXPIRY` is set: the escrow pass alone and the operator's verdicts run
    /// without the ledger's expiry pass before them (see `Pads::expire_holds`).
    race_expiry: bool,
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
            pads: PadSettings {
                escrow_s: ESCROW_S,
                ..PadSettings::default()
            },
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
            post_price_minor: 1,
            commission_bps: COMMISSION_BPS,
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
            providers: Vec::new(),
            bodies: HashMap::new(),
            replies: HashMap::new(),
            states: HashMap::new(),
            race_expiry: std::env::var_os("SIM_PADS_RACE_EXPIRY").is_some(),
            collected: std::collections::HashSet::new(),
            network: Vec::new(),
            keys: 0,
            trace: Vec::new(),
            outcome: PadsOutcome::default(),
        };
        sim.register("weather", false).await.map_err(fail)?;
        sim.register("notary", true).await.map_err(fail)?;
        for _ in 0..3 {
            sim.sell().await.map_err(fail)?;
        }
        Ok(sim)
    }

    /// A provider registers (by the operator, for its owner): a merchant account of its own,
    /// a price of 1 to 15 minor units.
    async fn register(&mut self, name: &str, escrow: bool) -> Step<()> {
        let (account, _) = self
            .node
            .open_account(
                &self.admin,
                None,
                tally_service::ledger_ops::OpenAccount {
                    owner: Some(format!("provider-{name}")),
                    currency: "EUR".into(),
                    kind: Some(tally_ledger::AccountKind::Merchant),
                    ..tally_service::ledger_ops::OpenAccount::default()
                },
            )
            .await
            .map_err(unexpected)?;
        self.providers.push(SimProvider {
            name: name.into(),
            account: account.id,
            escrow,
        });
        self.reprice(self.providers.len() - 1).await
    }

    /// Provider `k` registers its terms again, at a new price (forwards taken keep theirs).
    async fn reprice(&mut self, k: usize) -> Step<()> {
        let price = self.rng.random_range(1..=15i64);
        let p = &self.providers[k];
        let req = PadProviderRequest {
            account: p.account,
            price_minor: price,
            currency: "EUR".into(),
            webhook: format!("https://{}.sim/hook", p.name),
            escrow: p.escrow,
        };
        let view = self
            .node
            .pads()
            .register_provider(&self.admin, &p.name, &req)
            .await
            .map_err(unexpected)?;
        if view.price_minor != price || view.escrow != p.escrow || view.account != p.account {
            return Err(format!("provider {} registered as {view:?}", p.name));
        }
        self.note(format!("provider {} at {price} minor", p.name));
        Ok(())
    }

    fn note(&mut self, what: String) {
        self.trace.push(what);
    }

    /// The operator sells a pad: 4 to 32 KiB, a value of 2 to 100 minor units (some run out
    /// of value before bytes), one in four a session-key pad.
    async fn sell(&mut self) -> Step<()> {
        self.keys += 1;
        let key = format!("sale-{}", self.keys);
        let size = 4096 * self.rng.random_range(1..=8u64);
        let value = self.rng.random_range(2..=100i64);
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
            foreign: false,
            lines: Vec::new(),
            requests: Vec::new(),
            value_account: view.value_account,
            face_minor: value,
        });
        self.outcome.pads += 1;
        Ok(())
    }

    async fn step(&mut self) -> Step<()> {
        match self.rng.random_range(0..120) {
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
                self.tick(s);
                Ok(())
            }
            93..=96 => self.crash().await,
            97..=104 => self.provider_reply().await,
            105..=107 => self.verdict().await,
            108..=110 => self.settle().await,
            111..=114 => self.sweeper(true).await,
            115 => self.sweeper(false).await,
            // Escrows come due.
            116..=117 => {
                let s = self.rng.random_range(600..=2 * ESCROW_S);
                self.tick(s);
                Ok(())
            }
            // Rarely, a day or two without a sweeper: the ledger's holds run out.
            118 if self.rng.random_range(0..3) == 0 => {
                let s = self.rng.random_range(86_400..=2 * 86_400);
                self.tick(s);
                Ok(())
            }
            119 => {
                let k = self.rng.random_range(0..self.providers.len());
                self.reprice(k).await
            }
            _ => Ok(()),
        }
    }

    fn tick(&mut self, s: i64) {
        self.clock.fetch_add(s * 1_000_000, Ordering::SeqCst);
        self.note(format!("clock +{s} s"));
    }

    /// A holder with nothing in flight seals its next request and sends it.
    async fn send(&mut self) -> Step<()> {
        let choice = self.rng.random_range(0..25);
        let mut idle: Vec<usize> = (0..self.holders.len())
            .filter(|i| self.holders[*i].in_flight.is_none())
            .collect();
        // A release or dispute is sent by a holder with an escrow open, if one is idle.
        let open = |r: &RequestId| {
            self.states
                .get(&r.0)
                .is_some_and(|s| matches!(s.as_str(), "held" | "performed"))
        };
        let with_open: Vec<usize> = idle
            .iter()
            .copied()
            .filter(|i| self.holders[*i].requests.iter().any(open))
            .collect();
        if choice >= 19 && !with_open.is_empty() {
            idle = with_open;
        }
        if idle.is_empty() {
            return Ok(());
        }
        let i = idle[self.rng.random_range(0..idle.len())];
        let mut posting = None;
        let mut foreign = false;
        let request = match choice {
            // A forward to a registered provider, one in three with the escrow flag.
            14..=18 => {
                let p = &self.providers[self.rng.random_range(0..self.providers.len())];
                Request::Forward {
                    provider: ProviderName::new(&p.name).map_err(unexpected)?,
                    escrow: self.rng.random_range(0..3) == 0,
                    body: vec![2; self.rng.random_range(0..600)],
                }
            }
            // A release or dispute of one of its requests (mostly an open escrow; or one not
            // escrowed, or resolved: burned), or one in six of another pad's.
            19..=24 => {
                let theirs = self.rng.random_range(0..6) == 0;
                let mut from: Vec<(usize, RequestId)> = self
                    .holders
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| (*j == i) != theirs)
                    .flat_map(|(j, h)| h.requests.iter().map(move |r| (j, *r)))
                    .collect();
                // Mostly an escrow still open (as last checked).
                let still: Vec<(usize, RequestId)> =
                    from.iter().filter(|(_, r)| open(r)).copied().collect();
                if !still.is_empty() && self.rng.random_range(0..4) > 0 {
                    from = still;
                }
                if from.is_empty() {
                    Request::Noop
                } else {
                    let (j, request) = from[self.rng.random_range(0..from.len())];
                    foreign = j != i;
                    if self.rng.random_range(0..2) == 0 {
                        Request::Dispute { request }
                    } else {
                        Request::Release { request }
                    }
                }
            }
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
                self.holders[i].foreign = foreign;
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
                if std::mem::take(&mut h.foreign) {
                    return Err(format!(
                        "holder {i}'s release or dispute of another pad's request was taken"
                    ));
                }
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
                            // A provider's reply says who sent it and which request it
                            // answers: one of the holder's forwards.
                            let reply = self.replies.get(&m.body).filter(|(to, request, p)| {
                                *to == i
                                    && m.in_reply_to == Some(RequestId(*request))
                                    && matches!(&m.from, Sender::Provider(n) if n.as_str() == p)
                            });
                            match (self.bodies.get(&m.body), reply) {
                                (Some(Some(to)), _) if *to == i => {}
                                (None, Some(_)) => {}
                                (other, _) => {
                                    return Err(format!(
                                        "holder {i} collected a message for {other:?} \
                                         (from {:?}, in reply to {:?})",
                                        m.from, m.in_reply_to
                                    ));
                                }
                            }
                            self.outcome.collected += 1;
                        }
                    }
                    ReplyBody::Forward { request } => h.requests.push(request),
                    ReplyBody::Release => self.outcome.releases += 1,
                    ReplyBody::Dispute => self.outcome.disputes += 1,
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
                h.foreign = false;
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

    /// Every forward, as stored, in the order of its pad's holder and its frame's offset (its
    /// request id and pad id are random: an order by them would not replay from the seed).
    async fn forwards(&self) -> Step<Vec<ForwardSeen>> {
        use sqlx::Row as _;
        let rows = crate::check::rows(
            &self.node,
            "SELECT request, pad, provider, escrow, price_minor, state, step_key, charge_minor \
             FROM pad_forwards",
        )
        .await?;
        let mut all = rows
            .iter()
            .map(|r| {
                Ok(ForwardSeen {
                    request: bytes16(r, "request")?,
                    pad: bytes16(r, "pad")?,
                    provider: crate::check::text(r, "provider")?,
                    escrow: crate::check::int(r, "escrow")? != 0,
                    price_minor: crate::check::int(r, "price_minor")?,
                    state: crate::check::text(r, "state")?,
                    step_key: crate::check::text(r, "step_key")?,
                    charge_minor: r
                        .try_get::<Option<i64>, _>("charge_minor")
                        .map_err(unexpected)?,
                })
            })
            .collect::<Step<Vec<ForwardSeen>>>()?;
        all.sort_by_cached_key(|f| {
            let holder = self.holders.iter().position(|h| h.file.pad.0 == f.pad);
            let offset = f
                .step_key
                .rsplit(':')
                .nth(1)
                .and_then(|o| o.parse::<u64>().ok());
            (holder, offset)
        });
        Ok(all)
    }

    /// Every charge line of the pad currency, as stored.
    async fn charges(&self) -> Step<Vec<ChargeSeen>> {
        use sqlx::Row as _;
        let rows = crate::check::rows(
            &self.node,
            "SELECT id, pad, provider, operator_minor, provider_minor, held, fee_paid, \
             provider_paid FROM pad_charges WHERE currency = 'EUR' ORDER BY id",
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChargeSeen {
                    id: bytes16(r, "id")?,
                    pad: bytes16(r, "pad")?,
                    provider: r
                        .try_get::<Option<String>, _>("provider")
                        .map_err(unexpected)?,
                    operator_minor: crate::check::int(r, "operator_minor")?,
                    provider_minor: crate::check::int(r, "provider_minor")?,
                    held: crate::check::int(r, "held")? != 0,
                    fee_paid: crate::check::int(r, "fee_paid")? != 0,
                    provider_paid: crate::check::int(r, "provider_paid")? != 0,
                })
            })
            .collect()
    }

    /// A provider replies to a forward it was sent: mostly one still open, performed or not
    /// (three in four performed); sometimes one answered before (the node sends nothing more).
    /// One reply in four is sent again (its answer lost): it is answered as replayed.
    async fn provider_reply(&mut self) -> Step<()> {
        let forwards = self.forwards().await?;
        if forwards.is_empty() {
            return Ok(());
        }
        let open: Vec<&ForwardSeen> = forwards
            .iter()
            .filter(|f| matches!(f.state.as_str(), "sent" | "held"))
            .collect();
        let f = if !open.is_empty() && self.rng.random_range(0..4) > 0 {
            open[self.rng.random_range(0..open.len())]
        } else {
            &forwards[self.rng.random_range(0..forwards.len())]
        };
        let was_open = matches!(f.state.as_str(), "sent" | "held");
        let holder = self
            .holders
            .iter()
            .position(|h| h.file.pad.0 == f.pad)
            .ok_or("a forward of a pad no holder has")?;
        let body = format!("reply {} from {}", self.replies.len(), f.provider).into_bytes();
        let performed = self.rng.random_range(0..4) > 0;
        // A provider that performed an escrowed request may meter it (one in three): charge
        // 0 up to the price held. One reply in ten asks for a charge it may not (on a request
        // not escrowed or not performed, or above the price): refused, nothing changes.
        let meters = f.escrow && performed;
        let wrong = self.rng.random_range(0..10) == 0;
        let charge_minor = if wrong && meters {
            Some(f.price_minor + self.rng.random_range(1..=5))
        } else if wrong || (meters && self.rng.random_range(0..3) == 0) {
            Some(self.rng.random_range(0..=f.price_minor))
        } else {
            None
        };
        let req = PadReplyRequest {
            request: RequestId(f.request).to_string(),
            body: base64::engine::general_purpose::STANDARD.encode(&body),
            performed,
            charge_minor,
        };
        let answer = self.node.pads().reply(&self.admin, &f.provider, &req).await;
        if wrong {
            let after = self
                .node
                .store()
                .pad_forward(&f.request)
                .await
                .map_err(unexpected)?
                .ok_or("a forward went missing")?;
            if answer.is_ok() || after.state != f.state || after.charge_minor != f.charge_minor {
                return Err(format!(
                    "a reply charging {charge_minor:?} (performed {performed}) to {} ({}, \
                     escrow {}, price {}) was taken: {answer:?}",
                    req.request, f.state, f.escrow, f.price_minor
                ));
            }
            return Ok(());
        }
        let (view, replayed) = answer.map_err(unexpected)?;
        if replayed == was_open {
            return Err(format!(
                "a reply to {} in state {} answered replayed {replayed}",
                req.request, f.state
            ));
        }
        if replayed {
            if view.state != f.state {
                return Err(format!(
                    "a repeated reply moved {} from {} to {}",
                    req.request, f.state, view.state
                ));
            }
            return Ok(());
        }
        let expected = match (f.escrow, performed) {
            (false, _) => "replied",
            (true, true) => "performed",
            (true, false) => "declined",
        };
        if view.state != expected {
            return Err(format!(
                "{} replied (performed {performed}) is {}, not {expected}",
                req.request, view.state
            ));
        }
        self.replies
            .insert(body, (holder, f.request, f.provider.clone()));
        self.outcome.replies += 1;
        self.outcome.metered += usize::from(charge_minor.is_some());
        self.note(format!(
            "{} replies to {} (performed {performed}, charge {charge_minor:?})",
            f.provider, req.request
        ));
        if self.rng.random_range(0..4) == 0 {
            let (again, replayed) = self
                .node
                .pads()
                .reply(&self.admin, &view.provider, &req)
                .await
                .map_err(unexpected)?;
            if !replayed || again.state != view.state {
                return Err(format!("a reply sent again was not replayed: {again:?}"));
            }
        }
        Ok(())
    }

    /// The operator's verdict on a disputed escrow (paid or refused at once); or, when none
    /// is disputed, on an open one, which it refuses and leaves as it was.
    async fn verdict(&mut self) -> Step<()> {
        if !self.race_expiry {
            self.expire_holds().await?;
        }
        let forwards = self.forwards().await?;
        let disputed: Vec<&ForwardSeen> =
            forwards.iter().filter(|f| f.state == "disputed").collect();
        let pay = self.rng.random_range(0..2) == 0;
        if disputed.is_empty() {
            let open: Vec<&ForwardSeen> = forwards
                .iter()
                .filter(|f| matches!(f.state.as_str(), "held" | "performed"))
                .collect();
            let Some(f) = open.get(self.rng.random_range(0..open.len().max(1))) else {
                return Ok(());
            };
            let request = RequestId(f.request).to_string();
            if let Ok(v) = self
                .node
                .pads()
                .decide_escrow(&self.admin, &request, pay)
                .await
            {
                return Err(format!("a verdict on an undisputed escrow: {v:?}"));
            }
            let after = self
                .node
                .store()
                .pad_forward(&f.request)
                .await
                .map_err(unexpected)?
                .ok_or("a forward went missing")?;
            if after.state != f.state {
                return Err(format!(
                    "a refused verdict moved {request} from {} to {}",
                    f.state, after.state
                ));
            }
            return Ok(());
        }
        let f = disputed[self.rng.random_range(0..disputed.len())];
        self.decide(f.request, &f.step_key.clone(), pay).await
    }

    /// The operator decides the disputed escrow `request`: paid as decided, or refused; a
    /// verdict to pay is refused only when the ledger's hold ran out (the price and the byte
    /// debit went back to the pad).
    async fn decide(&mut self, request: [u8; 16], step_key: &str, pay: bool) -> Step<()> {
        let request = RequestId(request).to_string();
        self.note(format!("the operator decides {request}: pay {pay}"));
        let view = self
            .node
            .pads()
            .decide_escrow(&self.admin, &request, pay)
            .await
            .map_err(|e| format!("the verdict on {request} (pay {pay}) failed: {e}"))?;
        let ran_out = self
            .hold(step_key)
            .await?
            .is_some_and(|t| t.state == tally_ledger::TransferState::Expired);
        match (pay, view.state.as_str()) {
            (true, "paid") | (false, "refused") => {}
            (true, "refused") if ran_out => self.outcome.verdicts_too_late += 1,
            (_, other) => {
                return Err(format!(
                    "{request} decided (pay {pay}) is {other} (its hold ran out: {ran_out})"
                ));
            }
        }
        self.outcome.verdicts += 1;
        Ok(())
    }

    /// The operator settles: every share not held is paid out once, clearing is left empty.
    async fn settle(&mut self) -> Step<()> {
        let settled = self
            .node
            .pads()
            .settle_all()
            .await
            .map_err(|e| format!("a settlement failed: {e}"))?;
        let fees = self.fees_account().await?;
        for p in &settled.payouts {
            let to = match &p.provider {
                Some(name) => self
                    .providers
                    .iter()
                    .find(|k| k.name == *name)
                    .map(|k| k.account),
                None => fees,
            };
            if p.amount_minor < 0 || p.lines == 0 || p.currency != "EUR" || to != Some(p.account) {
                return Err(format!("a settlement paid {p:?}"));
            }
        }
        self.outcome.payouts += settled.payouts.len();
        self.note(format!("settled: {} payouts", settled.payouts.len()));
        let owed = self
            .node
            .store()
            .pad_clearing_owed(eur()?)
            .await
            .map_err(unexpected)?;
        if owed != (0, 0) {
            return Err(format!("a settlement left {owed:?} owed"));
        }
        Ok(())
    }

    /// The operator's sweeper: the ledger's expired holds first, then due escrows and the
    /// settlement when due (`full`, as the node's workers sweep); or the escrow pass alone.
    /// No escrow is left due.
    async fn sweeper(&mut self, full: bool) -> Step<()> {
        let now = self.node.now();
        self.note(format!("sweep (full {full})"));
        let resolved = if full {
            self.expire_holds().await?;
            let (escrows, payouts) = self
                .node
                .pads()
                .sweep(1_000)
                .await
                .map_err(|e| format!("the pad sweep failed: {e}"))?;
            self.outcome.payouts += payouts;
            escrows
        } else {
            if !self.race_expiry {
                self.expire_holds().await?;
            }
            self.node
                .pads()
                .sweep_escrows(1_000)
                .await
                .map_err(|e| format!("the escrow sweep failed: {e}"))?
        };
        self.note(format!("{resolved} escrows resolved"));
        let due = self
            .node
            .store()
            .pad_escrows_due(
                now,
                now.plus_seconds(-tally_service::pad::DISPUTE_GRACE_S),
                1_000,
            )
            .await
            .map_err(unexpected)?;
        if let Some(f) = due.first() {
            let hold = self.hold(&f.step_key).await?;
            return Err(format!(
                "{} escrows still due after a sweep, {} in state {} (its hold: {:?}, until {:?})",
                due.len(),
                RequestId(f.request),
                f.state,
                hold.as_ref().map(|t| t.state),
                hold.and_then(|t| t.expires_at)
            ));
        }
        Ok(())
    }

    /// The ledger's expiry pass (the node's workers run it before the pad sweep): holds past
    /// their time are expired, their value back to the pad.
    ///
    /// The escrow pass and the operator's verdict need it first: an escrow whose hold's time
    /// ran out but which the ledger has not marked expired yet is resolved by posting or
    /// voiding that hold (`crates/service/src/pad/escrow.rs`, `resolve_escrow` reads it with
    /// `still_pending`, not `live_hold`), which the ledger refuses (`PendingExpired`): the
    /// escrow pass skips it (it stays due until the ledger's expiry pass), and a verdict
    /// fails after moving the escrow. With `SIM_PADS_RACE_EXPIRY` set, the escrow pass alone
    /// and the verdicts run without this pass before them, as they may in the node when a
    /// hold's time ran out since the workers' last expiry pass (`SIM_SEED=5`: an escrow left
    /// due by a sweep; `SIM_SEED=4`: a verdict that fails).
    async fn expire_holds(&self) -> Step<()> {
        self.node
            .store()
            .expire_due(self.node.now(), 1_000)
            .await
            .map_err(unexpected)?;
        Ok(())
    }

    /// The ledger transfer a frame step made (an escrowed forward's: its hold).
    async fn hold(&self, step_key: &str) -> Step<Option<tally_ledger::Transfer>> {
        let store = self.node.store();
        let id = match store.journal_event(step_key).await.map_err(unexpected)? {
            Some(tally_ledger::Event::Transfers { transfers }) => transfers.first().map(|t| t.id),
            _ => None,
        };
        match id {
            Some(id) => store.transfer(id).await.map_err(unexpected),
            None => Ok(None),
        }
    }

    /// The operator's pad fee account in EUR, once a settlement opened it.
    async fn fees_account(&self) -> Step<Option<Id>> {
        let all = self
            .node
            .store()
            .pad_currencies_fees()
            .await
            .map_err(unexpected)?;
        let eur = eur()?;
        Ok(all
            .into_iter()
            .find(|(c, _)| *c == eur)
            .and_then(|(_, a)| a))
    }

    async fn crash(&mut self) -> Step<()> {
        self.note("crash and restart".into());
        self.outcome.crashes += 1;
        self.node = crate::reopen(&self.node, &self.node_config).await?;
        Ok(())
    }

    /// The invariants, after every step.
    async fn check(&mut self) -> Step<()> {
        let forwards = self.forwards().await?;
        let charges = self.charges().await?;
        let fees = self.fees_account().await?;
        let store = self.node.store();
        let commission = |price: i64| price * i64::from(COMMISSION_BPS) / 10_000;
        let line_sum = |c: &ChargeSeen| c.operator_minor + c.provider_minor;
        let charge_of: HashMap<[u8; 16], &ChargeSeen> = charges.iter().map(|c| (c.id, c)).collect();
        for c in &charges {
            if c.operator_minor < 0 || c.provider_minor < 0 {
                return Err(format!(
                    "a charge line has shares {}+{}",
                    c.operator_minor, c.provider_minor
                ));
            }
            // A held line is not in clearing: none of it is paid.
            if c.held && (c.fee_paid || (c.provider_paid && c.provider_minor > 0)) {
                return Err("a held charge line is marked paid".into());
            }
        }
        // The pads' debits posted into clearing and held for it, the held lines' sum (less
        // holds the ledger expired), and what each provider's forwards not refused earned it.
        let (mut posted, mut pending, mut held_total) = (0i64, 0i64, 0i64);
        let mut earned: HashMap<&str, i64> = HashMap::new();
        let mut pads_seen = 0;
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
            let mut debited_lines = 0;
            let mut by_offset: HashMap<u64, Line> = HashMap::new();
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
                if line.debit_minor < 0 || (line.debit_minor > 0 && line.outcome != Outcome::Taken)
                {
                    return Err(format!("pad {i}: line {n} debits {}", line.debit_minor));
                }
                debits += line.debit_minor;
                debited_lines += usize::from(line.debit_minor > 0);
                // The holder's lines are the node's, as far as it heard.
                if let Some(mine) = h.lines.get(n)
                    && *mine != line
                {
                    return Err(format!("pad {i}: the holder's line {n} differs"));
                }
                by_offset.insert(line.up_offset, line);
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
            // Each forward of the pad is one of its taken lines, and its charge line splits
            // that line's debit: the provider's share is its price then less the commission,
            // held while the escrow is open; a refused escrow keeps the byte debit alone (or
            // nothing, when the ledger's hold ran out), the rest went back to the pad.
            let (mut refunds, mut back) = (0, 0);
            for f in forwards.iter().filter(|f| f.pad == *pad) {
                let request = RequestId(f.request);
                let mut key = f.step_key.rsplit(':');
                let digest = key.next().and_then(|d| hex::decode(d).ok());
                let offset = key.next().and_then(|o| o.parse::<u64>().ok());
                let line = offset
                    .and_then(|o| by_offset.get(&o))
                    .filter(|l| {
                        l.outcome == Outcome::Taken && digest.as_deref() == Some(&l.up_digest[..])
                    })
                    .ok_or_else(|| {
                        format!("pad {i}: {request} is no taken line ({})", f.step_key)
                    })?;
                let debit = line.debit_minor;
                let share = f.price_minor - commission(f.price_minor);
                let Some(c) = charge_of.get(&f.request) else {
                    return Err(format!(
                        "pad {i}: {request} (escrow {}, debit {debit}) has no charge line",
                        f.escrow
                    ));
                };
                if c.pad != f.pad || c.provider.as_deref() != Some(f.provider.as_str()) {
                    return Err(format!("pad {i}: {request}'s charge line is another's"));
                }
                let sum = line_sum(c);
                let whole = sum == debit && c.provider_minor == share;
                // What the provider charged: its price, or less when it metered.
                let bytes = debit - f.price_minor;
                let used = f.charge_minor.unwrap_or(f.price_minor);
                if !(0..=f.price_minor).contains(&used) || (f.charge_minor.is_some() && !f.escrow) {
                    return Err(format!("pad {i}: {request} was charged {used}"));
                }
                let ok = match (f.escrow, f.state.as_str()) {
                    (false, "sent" | "replied") => !c.held && whole,
                    (true, "held" | "performed" | "disputed" | "released" | "declined") => {
                        c.held && whole
                    }
                    (true, "paid") if used < f.price_minor => {
                        !c.held
                            && c.operator_minor == bytes + commission(used)
                            && c.provider_minor == used - commission(used)
                    }
                    (true, "paid") => !c.held && whole,
                    (true, "refused") => {
                        !c.held
                            && c.provider_minor == 0
                            && (c.operator_minor == bytes || c.operator_minor == 0)
                    }
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "pad {i}: {request} ({}, escrow {}, debit {debit}, price {}) has the \
                         charge line {}+{} (held {})",
                        f.state,
                        f.escrow,
                        f.price_minor,
                        c.operator_minor,
                        c.provider_minor,
                        c.held
                    ));
                }
                // A resolved escrow gave back what its line does not keep: the price when
                // refused (the whole debit when its hold ran out), the price less the charge
                // when metered.
                if matches!(f.state.as_str(), "paid" | "refused") {
                    refunds += debit - sum;
                }
                if f.state != "refused" {
                    *earned.entry(f.provider.as_str()).or_default() += used - commission(used);
                }
                // An escrow's hold of the whole debit, from the pad into clearing: pending
                // while the line is held, or expired by the ledger (the value is back in the
                // pad; the escrow pass refuses it, a disputed one waits for its verdict);
                // posted when paid (whole, or the byte debit and the charge when metered);
                // posted for the byte debit, voided or expired when refused.
                if f.escrow {
                    use tally_ledger::TransferState as S;
                    let hold = self
                        .hold(&f.step_key)
                        .await?
                        .filter(|t| {
                            t.kind == tally_ledger::TransferKind::Pending
                                && t.debit_account == h.value_account
                                && t.amount_minor == debit
                        })
                        .ok_or_else(|| format!("pad {i}: {request} has no hold of {debit}"))?;
                    let fits = match (c.held, f.state.as_str(), hold.state) {
                        (true, _, S::Pending) => true,
                        (true, _, S::Expired) => {
                            back += debit;
                            true
                        }
                        (false, "paid", S::Posted) => bytes + used > 0,
                        (false, "paid", S::Voided) => bytes + used == 0,
                        (false, "refused", S::Posted) => bytes > 0 && c.operator_minor == bytes,
                        (false, "refused", S::Voided) => bytes == 0,
                        (false, "refused", S::Expired) => c.operator_minor == 0,
                        _ => false,
                    };
                    if !fits {
                        return Err(format!(
                            "pad {i}: {request} ({}, debit {debit}, price {}) has the charge \
                             line {}+{} (held {}) and its hold is {:?}",
                            f.state,
                            f.price_minor,
                            c.operator_minor,
                            c.provider_minor,
                            c.held,
                            hold.state
                        ));
                    }
                }
            }
            // One charge line per debit; their shares are the debits less the refunds.
            let mine: Vec<&ChargeSeen> = charges.iter().filter(|c| c.pad == *pad).collect();
            pads_seen += mine.len();
            let shares: i64 = mine.iter().map(|c| line_sum(c)).sum();
            let held: i64 = mine.iter().filter(|c| c.held).map(|c| line_sum(c)).sum();
            if mine.len() != debited_lines || shares != debits - refunds {
                return Err(format!(
                    "pad {i}: {} charge lines of {shares}, {debited_lines} lines debit \
                     {debits} less {refunds} refunded",
                    mine.len()
                ));
            }
            // Value never below zero, and the ledger's debits are the lines' less the refunds
            // (and the expired holds of escrows still open), the open escrows' held.
            let account = store
                .account(h.value_account)
                .await
                .map_err(unexpected)?
                .ok_or("a pad's value account is missing")?;
            if account.available_minor().unwrap_or(-1) < 0 || account.balance_minor() < 0 {
                return Err(format!("pad {i}: value below zero"));
            }
            if account.credits_posted != h.face_minor
                || account.debits_posted + account.debits_pending != debits - refunds - back
                || account.debits_pending != held - back
            {
                return Err(format!(
                    "pad {i}: {} debited and {} held, lines say {debits} less {refunds} \
                     refunded, {held} held ({back} of it expired)",
                    account.debits_posted, account.debits_pending
                ));
            }
            posted += account.debits_posted;
            pending += account.debits_pending;
            held_total += held - back;
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
        if pads_seen != charges.len() {
            return Err("a charge line of no pad sold".into());
        }
        // Money is conserved: the pads' debits are clearing's credits (posted and held);
        // clearing's debits are what settlements paid the fee account and the providers, each
        // exactly the shares marked paid to it; what is left is what the lines not held owe.
        let clearing = match self.clearing {
            Some(c) => c,
            None => {
                let c = store
                    .pad_currency(eur()?)
                    .await
                    .map_err(unexpected)?
                    .ok_or("no pad clearing account")?;
                self.clearing = Some(c.clearing_account);
                c.clearing_account
            }
        };
        let read = |id: Id| async move {
            store
                .account(id)
                .await
                .map_err(unexpected)?
                .ok_or_else(|| format!("account {id} is missing"))
        };
        let c = read(clearing).await?;
        if c.credits_posted != posted || c.credits_pending != pending || pending != held_total {
            return Err(format!(
                "clearing was credited {} and holds {} pending; pads were debited {posted} and \
                 {pending} held, charge lines hold {held_total}",
                c.credits_posted, c.credits_pending
            ));
        }
        let paid_fees: i64 = charges
            .iter()
            .filter(|c| c.fee_paid)
            .map(|c| c.operator_minor)
            .sum();
        let fees_in = match fees {
            Some(f) => read(f).await?.credits_posted,
            None => 0,
        };
        if fees_in != paid_fees {
            return Err(format!(
                "the fee account got {fees_in}, its paid shares are {paid_fees}"
            ));
        }
        let mut providers_in = 0;
        for p in &self.providers {
            let a = read(p.account).await?;
            let paid: i64 = charges
                .iter()
                .filter(|c| c.provider_paid && c.provider.as_deref() == Some(p.name.as_str()))
                .map(|c| c.provider_minor)
                .sum();
            let earned = earned.get(p.name.as_str()).copied().unwrap_or(0);
            if a.credits_posted != paid || a.credits_posted > earned || a.balance_minor() < 0 {
                return Err(format!(
                    "provider {} got {}, its paid shares are {paid}, its forwards not refused \
                     earned {earned}",
                    p.name, a.credits_posted
                ));
            }
            providers_in += a.credits_posted;
        }
        if c.debits_posted != fees_in + providers_in
            || c.debits_pending != 0
            || posted != c.balance_minor() + fees_in + providers_in
        {
            return Err(format!(
                "pads paid {posted} into clearing, which holds {} and paid out {} ({} pending), \
                 {fees_in} to fees and {providers_in} to providers",
                c.balance_minor(),
                c.debits_posted,
                c.debits_pending
            ));
        }
        let owed = store.pad_clearing_owed(eur()?).await.map_err(unexpected)?;
        if c.balance_minor() < 0 || c.balance_minor() != owed.0 + owed.1 {
            return Err(format!(
                "clearing holds {}, the charge lines not held owe {owed:?}",
                c.balance_minor()
            ));
        }
        // A forward's state only moves forward.
        for f in &forwards {
            let before = self.states.insert(f.request, f.state.clone());
            if let Some(b) = &before
                && !moves_to(b, &f.state)
            {
                return Err(format!(
                    "{} moved from {b} to {}",
                    RequestId(f.request),
                    f.state
                ));
            }
            if before.is_none() {
                self.outcome.forwards += 1;
                self.outcome.escrowed += usize::from(f.escrow);
            }
            if before.as_deref() != Some(f.state.as_str()) {
                match f.state.as_str() {
                    "paid" => self.outcome.escrows_paid += 1,
                    "refused" => self.outcome.escrows_refused += 1,
                    _ => {}
                }
            }
        }
        if self.states.len() != forwards.len() {
            return Err("a forward disappeared".into());
        }
        self.outcome.fees_paid = fees_in;
        self.outcome.providers_paid = providers_in;
        Ok(())
    }

    /// Every holder's frame in flight is delivered without faults; then the holders' records
    /// are the node's, every escrow is resolved, the clearing is settled, every message is
    /// collected or waits, and the audit passes.
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
        // Every dispute decided, every escrow past its deadline and swept, the clearing
        // settled: no escrow is open, nothing is held or owed.
        if !self.race_expiry {
            self.expire_holds().await?;
        }
        for f in self.forwards().await? {
            if f.state == "disputed" {
                let pay = self.rng.random_range(0..2) == 0;
                self.decide(f.request, &f.step_key, pay).await?;
            }
        }
        self.tick(ESCROW_S + 60);
        self.sweeper(true).await?;
        self.settle().await?;
        self.check().await?;
        if let Some(f) = self
            .forwards()
            .await?
            .iter()
            .find(|f| f.escrow && !matches!(f.state.as_str(), "paid" | "refused"))
        {
            return Err(format!(
                "{} is still {} at the end",
                RequestId(f.request),
                f.state
            ));
        }
        if self.charges().await?.iter().any(|c| c.held) {
            return Err("a charge line is still held at the end".into());
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
        if waiting as usize + self.outcome.collected != self.outcome.posted + self.outcome.replies {
            return Err(format!(
                "{} posted, {} replies, {} collected, {waiting} waiting",
                self.outcome.posted, self.outcome.replies, self.outcome.collected
            ));
        }
        // The collects' debits are settled too: clearing is empty.
        self.settle().await?;
        self.check().await?;
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
        Request::Release { .. } => "release",
        Request::Dispute { .. } => "dispute",
        _ => "other",
    }
}

fn eur() -> Step<tally_kernel::Currency> {
    tally_kernel::Currency::from_code("EUR").map_err(unexpected)
}

fn bytes16(r: &sqlx::any::AnyRow, column: &str) -> Step<[u8; 16]> {
    use sqlx::Row as _;
    r.try_get::<Vec<u8>, _>(column)
        .map_err(unexpected)?
        .try_into()
        .map_err(|_| format!("{column} is not 16 bytes"))
}

/// Whether a forward may move from state `from` to `to` (in one or more moves).
fn moves_to(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    let next: &[&str] = match from {
        "sent" => &["replied"],
        "held" => &["performed", "declined", "released", "disputed", "refused"],
        "performed" => &["released", "disputed", "paid", "refused"],
        "released" => &["paid", "refused"],
        "declined" => &["refused"],
        "disputed" => &["released", "declined"],
        _ => &[],
    };
    next.iter().any(|n| moves_to(n, to))
}
