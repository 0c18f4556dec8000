//! The simulated world: a node, its people and their phones, the network between them, and
//! the seeded choice of what happens at every step.

use crate::Config;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tally_kernel::crypto::bls::{self, ArbiterPublicKey, BlsPublicKey, BlsSecretKey};
use tally_kernel::crypto::warrant::{Counterparties, WarrantTerms, issue_warrant};
use tally_kernel::crypto::{Certificate, SigningKey, VerifyingKey};
use tally_kernel::{Amount, Currency, Id, Timestamp};
use tally_ledger::AccountKind;
use tally_proto::delivery::Acknowledgement;
use tally_proto::receipt::{self, Fields, PARTY_DOMAIN};
use tally_service::delivery::{Acknowledge, NewProduct, NewSale, PayReference};
use tally_service::ledger_ops::{OpenAccount, TransferOrder};
use tally_service::oob::{AppRequest, OobSettings, OpenSession, Opened};
use tally_service::receipt::{NewReceipt, NewToken, SignReceipt};
use tally_service::{Node, NodeConfig, Principal, Role, ServiceError};

/// Why a run stopped.
#[derive(Debug)]
pub struct Failure {
    /// The seed that replays it.
    pub seed: u64,
    /// The step it stopped at.
    pub step: usize,
    /// What broke.
    pub what: String,
    /// The last steps taken, oldest first.
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "simulation failed at step {}: {}", self.step, self.what)?;
        writeln!(f, "last steps:")?;
        for t in &self.trace {
            writeln!(f, "  {t}")?;
        }
        write!(
            f,
            "replay: SIM_SEED={} cargo test -p tally-sim -- --nocapture",
            self.seed
        )
    }
}

/// What a run did, for the summary.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Requests the node answered (including refusals).
    pub requests: usize,
    /// Requests dropped by the network.
    pub dropped: usize,
    /// Requests delivered twice.
    pub duplicated: usize,
    /// Answers lost (the client retried).
    pub answers_lost: usize,
    /// Node crashes and restarts.
    pub crashes: usize,
    /// Messages that reached a phone (repeats included).
    pub messages: usize,
    /// Sessions verified, sales released, receipts completed.
    pub verified: usize,
    /// Sales released.
    pub released: usize,
    /// Receipts completed (signed or resolved).
    pub receipts: usize,
    /// Ledger batches with linked chains (module `batches`).
    pub batches: crate::batches::BatchOutcome,
}

/// A request a client sends; requests are data, so the network can hold, reorder, drop and
/// repeat them.
#[derive(Debug, Clone)]
enum Req {
    OpenTransfer {
        from: usize,
        to: usize,
        minor: i64,
        key: String,
    },
    OpenPayment {
        merchant: usize,
        payer: usize,
        minor: i64,
        /// Through the operator as trustee (held on the payer's trustee credit).
        trustee: bool,
        key: String,
    },
    Confirm {
        session: String,
        code: String,
    },
    Cancel {
        session: String,
    },
    Buy {
        buyer: usize,
        product: usize,
        key: String,
    },
    Pay {
        buyer: usize,
        sale: usize,
        minor: i64,
        key: String,
    },
    Acknowledge {
        sale: usize,
        debit: bool,
    },
    Refund {
        payment: Id,
    },
    CancelSale {
        sale: usize,
    },
    Offer {
        fair: bool,
        key: String,
    },
    Escrow {
        tx: u64,
        good: bool,
    },
    Sign {
        tx: u64,
        good: bool,
    },
    Abort {
        tx: u64,
    },
    Resolve {
        tx: u64,
        by_b: bool,
    },
    /// The operator's back office sends a batch of transfer events (an index into
    /// [`crate::batches::Batches`]; the same index again is a retry of the whole batch).
    Batch {
        batch: usize,
    },
}

struct Person {
    name: String,
    principal: Principal,
    /// Customers: their account; merchants: the account paid by sessions.
    account: Id,
    /// Merchants: the account their products are paid to.
    store: Option<Id>,
    /// The dev inbox of the person (its phone): messages in arrival order.
    phone: String,
}

struct Sale {
    id: Id,
    buyer: usize,
    reference: String,
    price: i64,
    package_sha256: String,
}

struct Party {
    principal: Principal,
    key: SigningKey,
    bls: BlsSecretKey,
}

/// The simulated world.
pub struct Sim {
    config: Config,
    rng: StdRng,
    _dir: tempfile::TempDir,
    node_config: NodeConfig,
    clock: Arc<AtomicI64>,
    node: Node,
    admin: Principal,
    customers: Vec<Person>,
    merchants: Vec<Person>,
    products: Vec<Id>,
    sales: Vec<Sale>,
    sessions: Vec<String>,
    payments: Vec<Id>,
    receipts: Vec<u64>,
    alice: Party,
    bob: Party,
    receipt_keys: (VerifyingKey, BlsPublicKey, ArbiterPublicKey),
    /// Store accounts and suspense accounts, for the money checks.
    store_accounts: Vec<Id>,
    suspense: Vec<Id>,
    /// Requests in flight, in the order sent (delivered in any order).
    network: Vec<Req>,
    /// Codes and keys received, per phone.
    phones: HashMap<String, Vec<String>>,
    keys: usize,
    /// Complete receipts already verified offline (a complete receipt never changes; all are
    /// verified again at the end).
    checked: std::collections::HashSet<i64>,
    /// Ledger batches: their accounts, what was sent, what the checks remember.
    batches: crate::batches::Batches,
    trace: Vec<String>,
    outcome: Outcome,
}

fn eur(minor: i64) -> Amount {
    Amount::new(
        minor,
        Currency::from_code("EUR").expect("EUR is a currency"),
    )
}

fn code_in(body: &str) -> Option<String> {
    let at = body.find("code")? + 4;
    let digits: String = body[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    (6..=10).contains(&digits.len()).then_some(digits)
}

type Step<T> = Result<T, String>;

/// What can go wrong on the way to a phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Faults {
    /// Nothing (the world's set-up).
    None,
    /// Messages lost or repeated.
    Some,
    /// And the node dies after the phones got them, before the deliveries were recorded.
    AndCrash,
}

fn unexpected(e: impl std::fmt::Display) -> String {
    format!("unexpected failure: {e}")
}

impl Sim {
    /// A world for `config.seed`: a node, two merchants with a product each, three customers
    /// with money and a verified phone, and two receipt parties with tokens and a warrant.
    pub async fn new(config: Config) -> Result<Sim, crate::Failure> {
        let fail = |what: String| crate::setup_failure(config.seed, what);
        let dir = crate::scratch_dir().map_err(|e| fail(e.to_string()))?;
        let (clock, node_clock) = crate::fake_clock();
        let node_config = NodeConfig {
            dev: true,
            clock: node_clock,
            oob: OobSettings {
                address_quota: i64::MAX,
                user_daily_quota: i64::MAX,
                // Codes live long enough for a confirmation to cross the faulty network often.
                policy: tally_proto::oob::Policy {
                    ttl_s: 1_800,
                    ..OobSettings::default().policy
                },
                ..OobSettings::default()
            },
            // Short periods, so the simulated clock reaches overdue alerts and expiries.
            delivery: tally_service::delivery::DeliverySettings {
                overdue_after_s: 1_200,
                expire_after_s: 2_400,
                ..tally_service::delivery::DeliverySettings::default()
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
        let view = node.receipts().node_view();
        let receipt_keys = (
            VerifyingKey::from_hex(&view.server_key).map_err(|e| fail(e.to_string()))?,
            BlsPublicKey::from_hex(&view.proxy_bls_key).map_err(|e| fail(e.to_string()))?,
            ArbiterPublicKey::from_hex(&view.arbiter_key).map_err(|e| fail(e.to_string()))?,
        );
        let placeholder = |name: &str| Party {
            principal: Principal {
                key_id: Id::new(),
                role: Role::Customer,
                owner: name.into(),
            },
            key: SigningKey::generate(),
            bls: BlsSecretKey::generate(),
        };
        let mut sim = Sim {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            _dir: dir,
            node_config,
            clock,
            node,
            admin,
            customers: Vec::new(),
            merchants: Vec::new(),
            products: Vec::new(),
            sales: Vec::new(),
            sessions: Vec::new(),
            payments: Vec::new(),
            receipts: Vec::new(),
            alice: placeholder("alice"),
            bob: placeholder("bob"),
            receipt_keys,
            store_accounts: Vec::new(),
            suspense: Vec::new(),
            network: Vec::new(),
            phones: HashMap::new(),
            keys: 0,
            checked: std::collections::HashSet::new(),
            batches: crate::batches::Batches::empty(),
            trace: Vec::new(),
            outcome: Outcome::default(),
        };
        sim.setup().await.map_err(fail)?;
        let customers = sim.customers.iter().map(|c| c.account).collect();
        sim.batches
            .setup(&sim.node, &sim.admin, customers)
            .await
            .map_err(fail)?;
        Ok(sim)
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.clock.load(Ordering::SeqCst))
    }

    fn key(&mut self) -> String {
        self.keys += 1;
        format!("sim-{}", self.keys)
    }

    /// A new API key for `name` in `role`, as the node authenticates it.
    async fn principal(&self, name: &str, role: Role) -> Step<Principal> {
        let (_, secret) = self
            .node
            .issue_api_key(&self.admin, role, name, "sim")
            .await
            .map_err(unexpected)?;
        self.node
            .authenticate(secret.expose())
            .await
            .map_err(unexpected)
    }

    async fn person(&mut self, name: &str, role: Role, kind: AccountKind) -> Step<Person> {
        let principal = self.principal(name, role).await?;
        let open = |kind| OpenAccount {
            owner: Some(name.into()),
            currency: "EUR".into(),
            kind: Some(kind),
            ..OpenAccount::default()
        };
        let (account, _) = self
            .node
            .open_account(&self.admin, None, open(kind))
            .await
            .map_err(unexpected)?;
        let store = if role == Role::Merchant {
            let (a, _) = self
                .node
                .open_account(&self.admin, None, open(kind))
                .await
                .map_err(unexpected)?;
            self.store_accounts.push(a.id);
            Some(a.id)
        } else {
            None
        };
        Ok(Person {
            name: name.into(),
            principal,
            account: account.id,
            store,
            // An SMS phone: its messages wait in the outbox until the simulator pumps them.
            phone: format!(
                "+49151{:07}",
                self.customers.len() * 100 + self.merchants.len()
            ),
        })
    }

    async fn setup(&mut self) -> Step<()> {
        let (world, _) = self
            .node
            .open_account(
                &self.admin,
                None,
                OpenAccount {
                    currency: "EUR".into(),
                    kind: Some(AccountKind::Settlement),
                    debits_must_not_exceed_credits: Some(false),
                    ..OpenAccount::default()
                },
            )
            .await
            .map_err(unexpected)?;
        for i in 0..2 {
            let m = self
                .person(&format!("shop{i}"), Role::Merchant, AccountKind::Merchant)
                .await?;
            self.merchants.push(m);
        }
        for i in 0..3 {
            let c = self
                .person(&format!("cust{i}"), Role::Customer, AccountKind::Customer)
                .await?;
            let key = self.key();
            self.node
                .transfer_money(
                    &self.admin,
                    &key,
                    TransferOrder {
                        debit_account: world.id,
                        credit_account: c.account,
                        amount: eur(100_000),
                        timeout_s: None,
                        memo: None,
                        notify: None,
                    },
                )
                .await
                .map_err(unexpected)?;
            // The phone is verified the normal way: a code to the dev inbox.
            let view = self
                .node
                .oob()
                .address_add(&self.admin, &c.name, "sms", &c.phone, None)
                .await
                .map_err(unexpected)?;
            self.pump(Faults::None).await?;
            let code = self.code_for(&c.phone, &view.session)?;
            self.node
                .oob()
                .verify(&view.session, &code, None)
                .await
                .map_err(unexpected)?;
            // Trustee credit: payments through the operator up to 30.00 EUR owed.
            self.node
                .oob()
                .trustee_set_limit(&self.admin, &c.name, eur(3_000))
                .await
                .map_err(unexpected)?;
            self.customers.push(c);
        }
        // A product per merchant: a small file, published.
        for m in 0..self.merchants.len() {
            let key = self.key();
            let merchant = &self.merchants[m];
            let (p, _) = self
                .node
                .delivery()
                .product_create(
                    &merchant.principal,
                    &key,
                    NewProduct {
                        title: format!("Album {m}"),
                        price: eur(990 + 10 * m as i64),
                        pay_to: merchant.store.ok_or("a merchant has a store account")?,
                        producer: None,
                        licence: "Personal use.".into(),
                        instructions: String::new(),
                        registration_template: None,
                    },
                )
                .await
                .map_err(unexpected)?;
            let body: &'static [u8] = b"the sound of the simulated sea";
            self.node
                .delivery()
                .product_upload(&merchant.principal, p.id, "sea.bin", "product", body)
                .await
                .map_err(unexpected)?;
            self.node
                .delivery()
                .product_publish(&merchant.principal, p.id)
                .await
                .map_err(unexpected)?;
            self.products.push(p.id);
        }
        // Receipt parties: alice signs, bob offers (the node signs for bob under his warrant).
        for (name, role, api_role) in [
            ("alice", "customer", Role::Customer),
            ("bob", "manager", Role::Merchant),
        ] {
            let principal = self.principal(name, api_role).await?;
            let key = SigningKey::generate();
            let bls = BlsSecretKey::generate();
            let idem = self.key();
            self.node
                .receipts()
                .token_issue(
                    &self.admin,
                    &idem,
                    NewToken::signed(name, role, &key, Some(&bls), Some(4), None),
                )
                .await
                .map_err(unexpected)?;
            let party = Party {
                principal,
                key,
                bls,
            };
            if name == "alice" {
                self.alice = party;
            } else {
                self.bob = party;
            }
        }
        let bob_cert = self.party_cert("bob").await?;
        let terms = WarrantTerms {
            counterparties: Counterparties::Names(vec!["alice".into()]),
            bls_key: Some(self.receipt_keys.1.to_bytes()),
        };
        let now = self.now();
        let warrant = issue_warrant(
            &bob_cert,
            &self.bob.key,
            &self.receipt_keys.0,
            "tally receipt service",
            &terms,
            now,
            now.plus_seconds(300 * 86_400),
        )
        .map_err(unexpected)?;
        self.node
            .receipts()
            .warrant_add(&self.bob.principal, &warrant.to_pem())
            .await
            .map_err(unexpected)?;
        Ok(())
    }

    async fn party_cert(&self, name: &str) -> Step<Certificate> {
        let party = self
            .node
            .store()
            .receipt_party(name)
            .await
            .map_err(unexpected)?
            .ok_or("no party")?;
        Certificate::from_der(&party.certificate).map_err(unexpected)
    }

    /// The run: `steps` seeded steps, the invariants after each, a full audit at the end.
    pub async fn run(&mut self) -> Result<Outcome, crate::Failure> {
        for step in 1..=self.config.steps {
            let taken = self.step().await;
            let checked = match taken {
                Ok(()) => self.check(false).await,
                Err(e) => Err(e),
            };
            if let Err(what) = checked {
                return Err(crate::Failure {
                    seed: self.config.seed,
                    step,
                    what,
                    trace: self.trace.clone(),
                });
            }
        }
        // Every complete receipt once more, then the full audit.
        self.checked.clear();
        self.check(true).await.map_err(|what| crate::Failure {
            seed: self.config.seed,
            step: self.config.steps,
            what,
            trace: self.trace.clone(),
        })?;
        let audit = self
            .node
            .audit(&self.admin)
            .await
            .map_err(|e| crate::Failure {
                seed: self.config.seed,
                step: self.config.steps,
                what: format!("audit failed: {e}"),
                trace: self.trace.clone(),
            })?;
        if !audit.ok() {
            return Err(crate::Failure {
                seed: self.config.seed,
                step: self.config.steps,
                what: format!("the audit found problems: {:?}", audit.ledger.problems),
                trace: self.trace.clone(),
            });
        }
        self.node.store().close().await;
        self.outcome.batches = self.batches.outcome;
        Ok(self.outcome.clone())
    }

    /// Every invariant of [`crate::check`], then the batches' own (`full`: even when the
    /// ledger did not change).
    async fn check(&mut self, full: bool) -> Step<()> {
        crate::check::all(
            &self.node,
            &self.store_accounts,
            &self.suspense,
            &mut self.checked,
        )
        .await?;
        self.batches.check(&self.node, full).await
    }

    fn note(&mut self, what: String) {
        self.trace.push(what);
        if self.trace.len() > 40 {
            self.trace.remove(0);
        }
    }

    /// One step, chosen by the seed.
    async fn step(&mut self) -> Step<()> {
        let roll = self.rng.random_range(0..112);
        match roll {
            0..=29 => {
                let req = self.new_request()?;
                self.note(format!("send {req:?}"));
                self.network.push(req);
            }
            30..=64 => self.deliver_request().await?,
            65..=77 => {
                let faults = if self.rng.random_bool(0.1) {
                    Faults::AndCrash
                } else {
                    Faults::Some
                };
                self.pump(faults).await?
            }
            78..=85 => {
                let seconds = if self.rng.random_bool(0.2) {
                    self.rng.random_range(300..900)
                } else {
                    self.rng.random_range(1..60)
                };
                self.note(format!("clock +{seconds} s"));
                self.clock.fetch_add(seconds * 1_000_000, Ordering::SeqCst);
            }
            86..=93 => {
                self.note("timers".into());
                tally_service::workers::sweep(&self.node).await;
                if self.rng.random_bool(0.3) {
                    // The operator ends a trustee period: merchants paid, debts collected.
                    self.note("trustee settlement".into());
                    let until = tally_kernel::Timestamp(self.clock.load(Ordering::SeqCst));
                    let r = self.node.oob().settle_trustee(&self.admin, until).await;
                    self.answer(r)?;
                }
            }
            94..=99 => self.crash().await?,
            _ => {
                // A batch of transfer events: a new one, or now and then one sent before again
                // (the client never heard back, or is not sure it did).
                let again = if self.rng.random_bool(0.15) {
                    self.batches.again(&mut self.rng)
                } else {
                    None
                };
                let (batch, line) = match again {
                    Some(old) => old,
                    None => {
                        let now = self.now();
                        self.batches.plan(&mut self.rng, now)
                    }
                };
                self.note(format!("send batch {batch}: {line}"));
                self.network.push(Req::Batch { batch });
            }
        }
        Ok(())
    }

    /// The node stops dead (nothing flushed beyond what committed) and starts again.
    async fn crash(&mut self) -> Step<()> {
        self.note("crash and restart".into());
        self.outcome.crashes += 1;
        self.node = crate::reopen(&self.node, &self.node_config).await?;
        Ok(())
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.rng.random_range(0..items.len())].clone())
    }

    fn new_request(&mut self) -> Step<Req> {
        let customers = self.customers.len();
        let minor = if self.rng.random_bool(0.5) {
            self.rng.random_range(1..5_000)
        } else {
            self.rng.random_range(1..200)
        };
        Ok(match self.rng.random_range(0..13) {
            0 => Req::OpenTransfer {
                from: self.rng.random_range(0..customers),
                to: self.rng.random_range(0..customers),
                minor,
                key: self.key(),
            },
            1 | 2 => Req::OpenPayment {
                merchant: self.rng.random_range(0..self.merchants.len()),
                payer: self.rng.random_range(0..customers),
                minor,
                trustee: self.rng.random_bool(0.4),
                key: self.key(),
            },
            3 | 4 => match self
                .sessions
                .last()
                .cloned()
                .filter(|_| self.rng.random_bool(0.6))
                .or_else(|| self.pick(&self.sessions.clone()))
            {
                // Mostly the newest session (its code is still fresh), with the code from
                // whichever phone received it.
                Some(session) => {
                    let phones: Vec<String> =
                        self.customers.iter().map(|c| c.phone.clone()).collect();
                    let right = phones.iter().find_map(|p| self.code_for(p, &session).ok());
                    let code = match right {
                        Some(c) if self.rng.random_bool(0.85) => c,
                        _ => format!("{:08}", self.rng.random_range(0..100_000_000)),
                    };
                    Req::Confirm { session, code }
                }
                None => Req::Offer {
                    fair: false,
                    key: self.key(),
                },
            },
            5 => match self.pick(&self.sessions.clone()) {
                Some(session) => Req::Cancel { session },
                None => Req::Offer {
                    fair: true,
                    key: self.key(),
                },
            },
            6 => Req::Buy {
                buyer: self.rng.random_range(0..customers),
                product: self.rng.random_range(0..self.products.len()),
                key: self.key(),
            },
            7 | 8 if !self.sales.is_empty() => {
                let sale = self.rng.random_range(0..self.sales.len());
                let price = self.sales[sale].price;
                let minor = match self.rng.random_range(0..4) {
                    0 => price - 1,
                    1 => price + self.rng.random_range(1..100),
                    _ => price,
                };
                Req::Pay {
                    buyer: self.sales[sale].buyer,
                    sale,
                    minor,
                    key: self.key(),
                }
            }
            9 if !self.sales.is_empty() => {
                let sale = self.rng.random_range(0..self.sales.len());
                if self.rng.random_bool(0.2) {
                    Req::CancelSale { sale }
                } else {
                    Req::Acknowledge {
                        sale,
                        debit: self.rng.random_bool(0.5),
                    }
                }
            }
            10 if !self.payments.is_empty() => Req::Refund {
                payment: self.pick(&self.payments.clone()).ok_or("no payment")?,
            },
            11 => Req::Offer {
                fair: self.rng.random_bool(0.5),
                key: self.key(),
            },
            _ => match self.pick(&self.receipts.clone()) {
                Some(tx) => match self.rng.random_range(0..5) {
                    0 => Req::Escrow {
                        tx,
                        good: self.rng.random_bool(0.85),
                    },
                    1 | 2 => Req::Sign {
                        tx,
                        good: self.rng.random_bool(0.85),
                    },
                    3 => Req::Abort { tx },
                    _ => Req::Resolve {
                        tx,
                        by_b: self.rng.random_bool(0.5),
                    },
                },
                None => Req::Offer {
                    fair: false,
                    key: self.key(),
                },
            },
        })
    }

    /// The network delivers one request in flight (any of them: reordered), or drops it, or
    /// delivers it and keeps a copy (a duplicate), or loses the answer (the client sends it
    /// again with the same idempotency key).
    async fn deliver_request(&mut self) -> Step<()> {
        if self.network.is_empty() {
            return Ok(());
        }
        let i = self.rng.random_range(0..self.network.len());
        let req = self.network.remove(i);
        let fate = self.rng.random_range(0..100);
        if fate < 5 {
            self.note(format!("drop {req:?}"));
            self.outcome.dropped += 1;
            return Ok(());
        }
        if fate < 10 {
            self.outcome.duplicated += 1;
            self.network.push(req.clone());
        }
        self.note(format!("deliver {req:?}"));
        self.outcome.requests += 1;
        let answered = self.execute(&req).await?;
        if fate >= 95 && answered {
            // The answer is lost: the client retries the same request.
            self.outcome.answers_lost += 1;
            self.network.push(req);
        }
        Ok(())
    }

    /// An answer the client takes; a refusal with a stable code is an answer too. Anything
    /// else (a storage failure, a bug) stops the run.
    fn answer<T>(&mut self, r: Result<T, ServiceError>) -> Step<Option<T>> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(ServiceError::Store(e)) => Err(format!("storage failed: {e}")),
            Err(ServiceError::Setup(e)) => Err(format!("the node failed: {e}")),
            Err(e) => {
                self.note(format!("  refused: {e}"));
                Ok(None)
            }
        }
    }

    async fn execute(&mut self, req: &Req) -> Step<bool> {
        let node = self.node.clone();
        match req.clone() {
            Req::OpenTransfer {
                from,
                to,
                minor,
                key,
            } => {
                let (user, by) = (
                    self.customers[from].name.clone(),
                    self.customers[from].principal.clone(),
                );
                let r = node
                    .oob()
                    .open(
                        Some(&by),
                        Some(&key),
                        OpenSession {
                            user,
                            app: AppRequest::Transfer {
                                debit_account: self.customers[from].account,
                                credit_account: self.customers[to].account,
                                amount: eur(minor),
                                memo: "sim".into(),
                            },
                            channel: None,
                            certificate: None,
                        },
                        None,
                    )
                    .await;
                if let Some(Opened::Secured { session, .. }) = self.answer(r)? {
                    self.sessions.push(session.session);
                }
            }
            Req::OpenPayment {
                merchant,
                payer,
                minor,
                trustee,
                key,
            } => {
                let by = self.merchants[merchant].principal.clone();
                let r = node
                    .oob()
                    .open(
                        Some(&by),
                        Some(&key),
                        OpenSession {
                            user: self.customers[payer].name.clone(),
                            app: if trustee {
                                AppRequest::Trustee {
                                    merchant_account: self.merchants[merchant].account,
                                    amount: eur(minor),
                                    description: "sim goods on credit".into(),
                                }
                            } else {
                                AppRequest::Payment {
                                    payer_account: Some(self.customers[payer].account),
                                    merchant_account: self.merchants[merchant].account,
                                    amount: eur(minor),
                                    description: "sim goods".into(),
                                    terminal: None,
                                }
                            },
                            channel: None,
                            certificate: None,
                        },
                        None,
                    )
                    .await;
                if let Some(Opened::Secured { session, .. }) = self.answer(r)? {
                    self.sessions.push(session.session);
                }
            }
            Req::Confirm { session, code } => {
                let r = node.oob().verify(&session, &code, None).await;
                if self.answer(r)?.is_some() {
                    self.outcome.verified += 1;
                }
            }
            Req::Cancel { session } => {
                let r = node.oob().cancel(&session).await;
                self.answer(r)?;
            }
            Req::Buy {
                buyer,
                product,
                key,
            } => {
                let c = &self.customers[buyer];
                let (by, phone) = (c.principal.clone(), c.phone.clone());
                let r = node
                    .delivery()
                    .buy(
                        &by,
                        &key,
                        NewSale {
                            product: self.products[product],
                            channel: "sms".into(),
                            address: phone,
                            name: None,
                        },
                    )
                    .await;
                if let Some((view, replayed)) = self.answer(r)?
                    && !replayed
                {
                    self.sales.push(Sale {
                        id: view.id,
                        buyer,
                        reference: view.reference,
                        price: view.price.minor,
                        package_sha256: view.package_sha256,
                    });
                }
            }
            Req::Pay {
                buyer,
                sale,
                minor,
                key,
            } => {
                let c = &self.customers[buyer];
                let (by, account) = (c.principal.clone(), c.account);
                let r = node
                    .delivery()
                    .pay_reference(
                        &by,
                        &key,
                        PayReference {
                            reference: self.sales[sale].reference.clone(),
                            from_account: account,
                            amount: eur(minor),
                        },
                        node.oob(),
                    )
                    .await;
                if let Some(p) = self.answer(r)?
                    && !p.replayed
                {
                    if p.status == tally_proto::delivery::sale::PaymentStatus::Matched {
                        self.outcome.released += 1;
                    }
                    self.payments.push(p.id);
                }
            }
            Req::Acknowledge { sale, debit } => {
                let s = &self.sales[sale];
                let c = &self.customers[s.buyer];
                let (by, account) = (c.principal.clone(), c.account);
                let ack = Acknowledgement {
                    v: 1,
                    sale: s.id,
                    reference: tally_proto::delivery::ReferenceCode::parse(&s.reference)
                        .map_err(unexpected)?,
                    package_sha256: s.package_sha256.clone(),
                };
                let r = node
                    .delivery()
                    .acknowledge(
                        &by,
                        s.id,
                        Acknowledge {
                            acknowledgement: ack,
                            debit_account: debit.then_some(account),
                            public_key: None,
                            signature: None,
                        },
                        node.oob(),
                        None,
                    )
                    .await;
                self.answer(r)?;
            }
            Req::Refund { payment } => {
                let r = node.delivery().refund(&self.admin.clone(), payment).await;
                self.answer(r)?;
            }
            Req::CancelSale { sale } => {
                let s = &self.sales[sale];
                let by = self.customers[s.buyer].principal.clone();
                let r = node.delivery().cancel(&by, s.id).await;
                self.answer(r)?;
            }
            Req::Offer { fair, key } => {
                let by = self.bob.principal.clone();
                let r = node
                    .receipts()
                    .offer(
                        &by,
                        &key,
                        NewReceipt {
                            record: format!("Order {key}\n"),
                            party_a: "bob".into(),
                            party_b: "alice".into(),
                            fair,
                            proxy_b: false,
                        },
                    )
                    .await;
                if let Some((view, replayed)) = self.answer(r)?
                    && !replayed
                {
                    self.receipts.push(view.transaction);
                }
            }
            Req::Escrow { tx, good } => {
                let Some(f) = self.fields(tx).await? else {
                    return Ok(true);
                };
                let msg = if good {
                    f.party_part().to_vec()
                } else {
                    b"another record".to_vec()
                };
                let ves = bls::encrypt_signature(
                    &self.alice.bls,
                    &self.receipt_keys.2,
                    PARTY_DOMAIN,
                    &msg,
                );
                let by = self.alice.principal.clone();
                let r = node.receipts().escrow(&by, tx, &ves.to_hex()).await;
                self.answer(r)?;
            }
            Req::Sign { tx, good } => {
                let Some(f) = self.fields(tx).await? else {
                    return Ok(true);
                };
                let view = node
                    .receipts()
                    .receipt(&self.admin, tx)
                    .await
                    .map_err(unexpected)?;
                let msg = if good {
                    f.party_part().to_vec()
                } else {
                    b"another record".to_vec()
                };
                let signature_b = if view.fair {
                    self.alice.bls.sign(PARTY_DOMAIN, &msg).to_hex()
                } else {
                    self.alice.key.sign(PARTY_DOMAIN, &msg).to_hex()
                };
                let by = self.alice.principal.clone();
                let r = node
                    .receipts()
                    .sign(
                        &by,
                        tx,
                        SignReceipt {
                            signature_b,
                            token: None,
                        },
                    )
                    .await;
                if self.answer(r)?.is_some() {
                    self.outcome.receipts += 1;
                }
            }
            Req::Abort { tx } => {
                let by = self.bob.principal.clone();
                let r = node.receipts().abort(&by, tx).await;
                self.answer(r)?;
            }
            Req::Resolve { tx, by_b } => {
                let Some(f) = self.fields(tx).await? else {
                    return Ok(true);
                };
                let (by, sig) = if by_b {
                    let sig = self.alice.bls.sign(PARTY_DOMAIN, &f.party_part()).to_hex();
                    (self.alice.principal.clone(), Some(sig))
                } else {
                    (self.bob.principal.clone(), None)
                };
                let r = node.receipts().resolve(&by, tx, sig.as_deref()).await;
                self.answer(r)?;
            }
            Req::Batch { batch } => {
                let now = self.now();
                let line = self.batches.deliver(&node, &self.admin, batch, now).await?;
                self.note(line);
                if self.rng.random_bool(0.06) {
                    // The batch committed; the node dies before its answer leaves, and the
                    // client sends the whole batch again.
                    self.batches.outcome.crashes += 1;
                    self.outcome.answers_lost += 1;
                    self.crash().await?;
                    self.network.push(req.clone());
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Fields 1–7 of a receipt, as party B sees them.
    async fn fields(&mut self, tx: u64) -> Step<Option<Fields>> {
        let view = match self.node.receipts().receipt(&self.admin, tx).await {
            Ok(v) => v,
            Err(e) => return Err(unexpected(e)),
        };
        let h = |t: &str| -> Step<[u8; 32]> {
            hex::decode(t)
                .map_err(unexpected)?
                .try_into()
                .map_err(|_| "not 32 bytes".to_string())
        };
        let f = Fields {
            version: view.version,
            server_id: h(&view.server_id)?,
            transaction: view.transaction,
            time: view.time,
            content_hash: h(&view.content_hash)?,
            party_a: h(&view.party_a_fingerprint)?,
            party_b: h(&view.party_b_fingerprint)?,
        };
        if receipt::content_hash(&view.record) != f.content_hash {
            return Err(format!("receipt {tx} shows another record than it hashes"));
        }
        Ok(Some(f))
    }

    /// The outbox delivers what is due to the phones, with faults: a message may be lost on
    /// the way (it is marked delivered but never arrives), arrive twice, or (with `crash`) the
    /// node may die after the phone got it and before the delivery was recorded (it is sent
    /// again once the lease runs out).
    async fn pump(&mut self, faults: Faults) -> Step<()> {
        let store = self.node.store().clone();
        let due = store
            .claim_due(self.now(), 64, 300)
            .await
            .map_err(unexpected)?;
        let mut delivered = Vec::new();
        for m in due {
            let text = self
                .node
                .render(&m.message)
                .await
                .map_err(|e| format!("cannot render message {}: {e}", m.message.dedup_key))?;
            let fate = match faults {
                Faults::None => 50,
                Faults::Some | Faults::AndCrash => self.rng.random_range(0..100),
            };
            if fate >= 5 {
                let phone = self.phones.entry(m.message.address.clone()).or_default();
                phone.push(format!("{} {}", m.message.dedup_key, text.expose()));
                if fate >= 95 {
                    phone.push(format!("{} {}", m.message.dedup_key, text.expose()));
                }
                self.outcome.messages += 1;
            }
            delivered.push(m.id);
        }
        if faults == Faults::AndCrash && !delivered.is_empty() {
            self.note(format!(
                "crash after delivering {} messages",
                delivered.len()
            ));
            return self.crash().await;
        }
        store
            .mark_sent_many(&delivered, self.now())
            .await
            .map_err(unexpected)
    }

    /// The code a phone received for `session`.
    fn code_for(&self, phone: &str, session: &str) -> Step<String> {
        let prefix = format!(":oob:{session}:code ");
        self.phones
            .get(phone)
            .into_iter()
            .flatten()
            .rev()
            .find_map(|m| m.strip_prefix(&prefix).and_then(code_in))
            .ok_or_else(|| format!("no code for {session} on {phone}"))
    }
}
