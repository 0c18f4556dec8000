//! Tables of signed receipts (SPEC R1–R6): parties and their certificates, tokens, warrants,
//! receipts from offer to acknowledged write, and the arbiter's decisions.
//!
//! As in [`crate::oob`], writes are [`Attachment`]s of a journal entry. Every step of a
//! receipt moves it from one state to the next under a [`crate::Guard`] on its current state,
//! so two nodes sharing a database cannot both take the same step; the arbiter's decision is
//! inserted once (its primary key) and then only moved from `open`, so it is never undone.

use crate::guarded::Conflict;
use crate::guarded::RowWrite;
use crate::oob::{row, row_is};
use crate::rows::Value;
use crate::{Attachment, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use tally_kernel::Timestamp;
use tally_proto::receipt::exchange::DecisionKind;
use tally_proto::receipt::flow::ReceiptState;

fn opt_blob(v: &Option<Vec<u8>>) -> Value {
    v.clone().map_or(Value::NullBlob, Value::Blob)
}

// ----- parties and tokens ------------------------------------------------------------------

/// A party to receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyRow {
    /// Its name (the certificate's CN, and the API-key owner it acts as).
    pub name: String,
    /// `customer`, `merchant` or `manager`.
    pub role: String,
    /// Its certificate from the node CA (DER).
    pub certificate: Vec<u8>,
    /// Hex SHA-256 of its Ed25519 key.
    pub fingerprint: String,
    /// Its BLS public key for fair exchange.
    pub bls_key: Option<Vec<u8>>,
    /// The token it was issued with.
    pub token_serial: Option<String>,
    /// When.
    pub created_at: Timestamp,
}

/// A token issued by the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Hex serial.
    pub serial: String,
    /// Its holder (a party).
    pub holder: String,
    /// Number of slots.
    pub slots: i64,
    /// The (namespaced) idempotency key of the issue.
    pub client_key: Option<String>,
    /// When.
    pub created_at: Timestamp,
}

/// Issues a token and (re-)certifies its holder: the party row is replaced, so a holder's
/// newest token and certificate are the ones used.
pub fn issue_token(t: &TokenRow, p: &PartyRow) -> [Attachment; 3] {
    [
        // One key, one party: a key certified for another holder is refused, decided in the
        // transaction (two issues racing cannot both take it).
        Attachment::Guard(crate::Guard {
            kind: crate::guarded::GuardKind::Count {
                sql: "SELECT COUNT(*) FROM receipt_parties WHERE fingerprint = $1 AND name <> $2",
                params: vec![
                    Value::Text(p.fingerprint.clone()),
                    Value::Text(p.name.clone()),
                ],
                bucket: format!("party_key:{}", p.fingerprint),
                max: 1,
            },
            conflict: Conflict::Taken("the public key is certified for another party"),
        }),
        row(
            "INSERT INTO receipt_tokens (serial, holder, slots, client_key, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
            vec![
                Value::Text(t.serial.clone()),
                Value::Text(t.holder.clone()),
                Value::Int(t.slots),
                Value::opt_text(t.client_key.clone()),
                Value::Int(t.created_at.as_micros()),
            ],
        ),
        row(
            "INSERT INTO receipt_parties (name, role, certificate, fingerprint, bls_key, \
             token_serial, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (name) DO UPDATE SET role = excluded.role, \
             certificate = excluded.certificate, fingerprint = excluded.fingerprint, \
             bls_key = excluded.bls_key, token_serial = excluded.token_serial, \
             created_at = excluded.created_at",
            vec![
                Value::Text(p.name.clone()),
                Value::Text(p.role.clone()),
                Value::Blob(p.certificate.clone()),
                Value::Text(p.fingerprint.clone()),
                opt_blob(&p.bls_key),
                Value::opt_text(p.token_serial.clone()),
                Value::Int(p.created_at.as_micros()),
            ],
        ),
    ]
}

fn party(r: &AnyRow) -> Result<PartyRow, StoreError> {
    Ok(PartyRow {
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        certificate: r.try_get("certificate")?,
        fingerprint: r.try_get("fingerprint")?,
        bls_key: r.try_get("bls_key")?,
        token_serial: r.try_get("token_serial")?,
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

const TOKEN_SELECT: &str =
    "SELECT serial, holder, slots, client_key, created_at FROM receipt_tokens";

fn token(r: &AnyRow) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        serial: r.try_get("serial")?,
        holder: r.try_get("holder")?,
        slots: r.try_get("slots")?,
        client_key: r.try_get("client_key")?,
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

// ----- warrants ----------------------------------------------------------------------------

/// A stored warrant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarrantRow {
    /// Certificate serial, hex.
    pub serial: String,
    /// The party that signed it.
    pub issuer: String,
    /// The warrant (DER).
    pub certificate: Vec<u8>,
    /// `*` or a comma-separated list of names.
    pub counterparties: String,
    /// Validity start.
    pub not_before: Timestamp,
    /// Validity end.
    pub not_after: Timestamp,
    /// When revoked.
    pub revoked_at: Option<Timestamp>,
    /// When stored.
    pub created_at: Timestamp,
}

/// Stores a warrant (once: its serial is the key).
pub fn insert_warrant(w: &WarrantRow) -> Attachment {
    row(
        "INSERT INTO warrants (serial, issuer, certificate, counterparties, not_before, \
         not_after, revoked_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        vec![
            Value::Text(w.serial.clone()),
            Value::Text(w.issuer.clone()),
            Value::Blob(w.certificate.clone()),
            Value::Text(w.counterparties.clone()),
            Value::Int(w.not_before.as_micros()),
            Value::Int(w.not_after.as_micros()),
            Value::opt_int(w.revoked_at.map(|t| t.as_micros())),
            Value::Int(w.created_at.as_micros()),
        ],
    )
}

/// Revokes a warrant that is not revoked yet.
pub fn revoke_warrant(serial: &str, now: Timestamp) -> [Attachment; 2] {
    [
        row_is(
            "warrants",
            "serial",
            Value::Text(serial.into()),
            vec![("revoked_at", Value::NullInt)],
            Conflict::Moved("the warrant is already revoked"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE warrants SET revoked_at = $1 WHERE serial = $2",
            params: vec![Value::Int(now.as_micros()), Value::Text(serial.into())],
            touches: Some(("warrants", Value::Text(serial.into()))),
        }),
    ]
}

/// Revokes a party's certificate by its serial (a second revocation changes nothing).
pub fn revoke_party_certificate(serial: &str, party: &str, now: Timestamp) -> Attachment {
    row(
        "INSERT INTO party_revocations (certificate_serial, party, revoked_at) \
         VALUES ($1, $2, $3) ON CONFLICT (certificate_serial) DO NOTHING",
        vec![
            Value::Text(serial.into()),
            Value::Text(party.into()),
            Value::Int(now.as_micros()),
        ],
    )
}

/// Requires a party certificate to be unrevoked when the batch commits (a signature made
/// with it stands only if no revocation committed first). `job` names the signing step, so
/// two steps of one batch do not count against each other.
pub fn party_unrevoked(serial: &str, job: &str) -> Attachment {
    Attachment::Guard(crate::Guard {
        kind: crate::guarded::GuardKind::Count {
            sql: "SELECT COUNT(*) FROM party_revocations WHERE certificate_serial = $1",
            params: vec![Value::Text(serial.into())],
            bucket: format!("party_unrevoked:{serial}:{job}"),
            max: 1,
        },
        conflict: Conflict::Revoked("the party's certificate was revoked"),
    })
}

/// Requires a warrant to be unrevoked when the batch commits (a proxy signature made under
/// it stands only if no revocation committed first).
pub fn warrant_unrevoked(serial: &str) -> Attachment {
    row_is(
        "warrants",
        "serial",
        Value::Text(serial.into()),
        vec![("revoked_at", Value::NullInt)],
        Conflict::Revoked("the warrant was revoked"),
    )
}

const WARRANT_SELECT: &str = "SELECT serial, issuer, certificate, counterparties, not_before, \
     not_after, revoked_at, created_at FROM warrants";

fn warrant(r: &AnyRow) -> Result<WarrantRow, StoreError> {
    Ok(WarrantRow {
        serial: r.try_get("serial")?,
        issuer: r.try_get("issuer")?,
        certificate: r.try_get("certificate")?,
        counterparties: r.try_get("counterparties")?,
        not_before: Timestamp(r.try_get("not_before")?),
        not_after: Timestamp(r.try_get("not_after")?),
        revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp),
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

// ----- receipts ----------------------------------------------------------------------------

/// A receipt at any step. `Debug` shows no signature: A's is withheld until B escrows.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceiptRow {
    /// Transaction id (field 3), unique per server.
    pub transaction_id: i64,
    /// Party A (the originator's side).
    pub party_a: String,
    /// Party B (the client).
    pub party_b: String,
    /// The API-key owner who offered it.
    pub created_by: String,
    /// Receipt version (1 Ed25519, 2 BLS).
    pub version: i64,
    /// Field 4, seconds.
    pub time: i64,
    /// The record text.
    pub record: String,
    /// Field 5.
    pub content_hash: Vec<u8>,
    /// Field 6: SHA-256 of A's key at the offer.
    pub fingerprint_a: Vec<u8>,
    /// Field 7: SHA-256 of B's key at the offer.
    pub fingerprint_b: Vec<u8>,
    /// A's certificate at the offer (DER): the key the receipt names, fixed for its life.
    pub certificate_a: Vec<u8>,
    /// B's certificate at the offer (DER).
    pub certificate_b: Vec<u8>,
    /// Fair exchange.
    pub fair: bool,
    /// Warrant serial of a proxy signature for A.
    pub warrant_a: Option<String>,
    /// Warrant serial of a proxy signature for B.
    pub warrant_b: Option<String>,
    /// The non-verifiable escrow of A's signature (fair exchange).
    pub escrow_a: Option<Vec<u8>>,
    /// Where it stands.
    pub state: ReceiptState,
    /// A's signature (kept back until the exchange allows it).
    pub signature_a: Option<Vec<u8>>,
    /// B's signature.
    pub signature_b: Option<Vec<u8>>,
    /// The server's signature over fields 1–5.
    pub signature_server: Option<Vec<u8>>,
    /// The receipt server's certificate (DER) when it signed: the one its package carries.
    pub certificate_server: Option<Vec<u8>>,
    /// B's verifiably encrypted signature.
    pub ves_b: Option<Vec<u8>>,
    /// The token written to.
    pub token_serial: Option<String>,
    /// The token's challenge.
    pub challenge: Option<Vec<u8>>,
    /// The token slot.
    pub slot: Option<i64>,
    /// The receipt number the client acks.
    pub receipt_number: Option<i64>,
    /// The sealed secure write, resent until acked.
    pub write: Option<Vec<u8>>,
    /// How often the write was (re)sent.
    pub write_attempts: i64,
    /// Hex SHA-256 of the core, once complete.
    pub digest: Option<String>,
    /// Idempotency key of the journal entry that completed it.
    pub journal_key: Option<String>,
    /// When the client acked the write.
    pub acked_at: Option<Timestamp>,
    /// The (namespaced) idempotency key of the offer.
    pub client_key: Option<String>,
    /// Offered.
    pub created_at: Timestamp,
    /// Last step.
    pub updated_at: Timestamp,
}

impl std::fmt::Debug for ReceiptRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptRow")
            .field("transaction_id", &self.transaction_id)
            .field("party_a", &self.party_a)
            .field("party_b", &self.party_b)
            .field("state", &self.state)
            .field("fair", &self.fair)
            .finish_non_exhaustive()
    }
}

/// Stores a new offer.
pub fn insert_receipt(r: &ReceiptRow) -> Attachment {
    row(
        "INSERT INTO receipts (transaction_id, party_a, party_b, created_by, version, \
         receipt_time, record, content_hash, fingerprint_a, fingerprint_b, certificate_a, \
         certificate_b, fair, warrant_a, warrant_b, escrow_a, state, signature_a, signature_b, \
         signature_server, ves_b, token_serial, challenge, slot, receipt_number, secure_write, \
         write_attempts, digest, journal_key, acked_at, client_key, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33)",
        vec![
            Value::Int(r.transaction_id),
            Value::Text(r.party_a.clone()),
            Value::Text(r.party_b.clone()),
            Value::Text(r.created_by.clone()),
            Value::Int(r.version),
            Value::Int(r.time),
            Value::Text(r.record.clone()),
            Value::Blob(r.content_hash.clone()),
            Value::Blob(r.fingerprint_a.clone()),
            Value::Blob(r.fingerprint_b.clone()),
            Value::Blob(r.certificate_a.clone()),
            Value::Blob(r.certificate_b.clone()),
            Value::Int(i64::from(r.fair)),
            Value::opt_text(r.warrant_a.clone()),
            Value::opt_text(r.warrant_b.clone()),
            opt_blob(&r.escrow_a),
            Value::Text(r.state.as_str().into()),
            opt_blob(&r.signature_a),
            opt_blob(&r.signature_b),
            opt_blob(&r.signature_server),
            opt_blob(&r.ves_b),
            Value::opt_text(r.token_serial.clone()),
            opt_blob(&r.challenge),
            Value::opt_int(r.slot),
            Value::opt_int(r.receipt_number),
            opt_blob(&r.write),
            Value::Int(r.write_attempts),
            Value::opt_text(r.digest.clone()),
            Value::opt_text(r.journal_key.clone()),
            Value::opt_int(r.acked_at.map(|t| t.as_micros())),
            Value::opt_text(r.client_key.clone()),
            Value::Int(r.created_at.as_micros()),
            Value::Int(r.updated_at.as_micros()),
        ],
    )
}

/// Moves a receipt to its next step: writes every mutable column of `r`, if the stored
/// state is still `from` (another request taking the same step first makes this a conflict).
pub fn step_receipt(r: &ReceiptRow, from: ReceiptState) -> [Attachment; 2] {
    [
        row_is(
            "receipts",
            "transaction_id",
            Value::Int(r.transaction_id),
            vec![("state", Value::Text(from.as_str().into()))],
            Conflict::Moved("the receipt moved on meanwhile"),
        ),
        Attachment::Row(RowWrite::Statement {
            sql: "UPDATE receipts SET state = $1, signature_a = $2, signature_b = $3, \
                  signature_server = $4, ves_b = $5, token_serial = $6, challenge = $7, \
                  slot = $8, receipt_number = $9, secure_write = $10, write_attempts = $11, \
                  digest = $12, journal_key = $13, acked_at = $14, updated_at = $15, \
                  warrant_a = $16, warrant_b = $17, certificate_server = $18 \
                  WHERE transaction_id = $19",
            params: vec![
                Value::Text(r.state.as_str().into()),
                opt_blob(&r.signature_a),
                opt_blob(&r.signature_b),
                opt_blob(&r.signature_server),
                opt_blob(&r.ves_b),
                Value::opt_text(r.token_serial.clone()),
                opt_blob(&r.challenge),
                Value::opt_int(r.slot),
                Value::opt_int(r.receipt_number),
                opt_blob(&r.write),
                Value::Int(r.write_attempts),
                Value::opt_text(r.digest.clone()),
                Value::opt_text(r.journal_key.clone()),
                Value::opt_int(r.acked_at.map(|t| t.as_micros())),
                Value::Int(r.updated_at.as_micros()),
                Value::opt_text(r.warrant_a.clone()),
                Value::opt_text(r.warrant_b.clone()),
                opt_blob(&r.certificate_server),
                Value::Int(r.transaction_id),
            ],
            touches: Some(("receipts", Value::Int(r.transaction_id))),
        }),
    ]
}

const RECEIPT_SELECT: &str = "SELECT transaction_id, party_a, party_b, created_by, version, \
     receipt_time, record, content_hash, fingerprint_a, fingerprint_b, certificate_a, certificate_b, fair, warrant_a, warrant_b, escrow_a, state, \
     signature_a, signature_b, signature_server, ves_b, token_serial, challenge, slot, \
     receipt_number, secure_write, write_attempts, digest, journal_key, acked_at, client_key, \
     created_at, updated_at, certificate_server FROM receipts";

fn receipt(r: &AnyRow) -> Result<ReceiptRow, StoreError> {
    Ok(ReceiptRow {
        transaction_id: r.try_get("transaction_id")?,
        party_a: r.try_get("party_a")?,
        party_b: r.try_get("party_b")?,
        created_by: r.try_get("created_by")?,
        version: r.try_get("version")?,
        time: r.try_get("receipt_time")?,
        record: r.try_get("record")?,
        content_hash: r.try_get("content_hash")?,
        fingerprint_a: r.try_get("fingerprint_a")?,
        fingerprint_b: r.try_get("fingerprint_b")?,
        certificate_a: r.try_get("certificate_a")?,
        certificate_b: r.try_get("certificate_b")?,
        fair: r.try_get::<i64, _>("fair")? != 0,
        warrant_a: r.try_get("warrant_a")?,
        warrant_b: r.try_get("warrant_b")?,
        escrow_a: r.try_get("escrow_a")?,
        state: crate::rows::state(r, "state", ReceiptState::parse)?,
        signature_a: r.try_get("signature_a")?,
        signature_b: r.try_get("signature_b")?,
        signature_server: r.try_get("signature_server")?,
        certificate_server: r.try_get("certificate_server")?,
        ves_b: r.try_get("ves_b")?,
        token_serial: r.try_get("token_serial")?,
        challenge: r.try_get("challenge")?,
        slot: r.try_get("slot")?,
        receipt_number: r.try_get("receipt_number")?,
        write: r.try_get("secure_write")?,
        write_attempts: r.try_get("write_attempts")?,
        digest: r.try_get("digest")?,
        journal_key: r.try_get("journal_key")?,
        acked_at: r.try_get::<Option<i64>, _>("acked_at")?.map(Timestamp),
        client_key: r.try_get("client_key")?,
        created_at: Timestamp(r.try_get("created_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
    })
}

// ----- the arbiter -------------------------------------------------------------------------

/// The arbiter's decision on one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRow {
    /// The transaction.
    pub transaction_id: i64,
    /// Which decision.
    pub decision: DecisionKind,
    /// A's signature, when resolved.
    pub signature_a: Option<Vec<u8>>,
    /// B's signature, when resolved.
    pub signature_b: Option<Vec<u8>>,
    /// Who asked.
    pub requested_by: String,
    /// When decided.
    pub decided_at: Timestamp,
}

/// Records the first decision on a transaction (the primary key refuses a second: a
/// concurrent decision makes this batch fail and the caller re-reads).
pub fn insert_decision(d: &DecisionRow) -> Attachment {
    row(
        "INSERT INTO arbiter_decisions (transaction_id, decision, signature_a, signature_b, \
         requested_by, decided_at) VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            Value::Int(d.transaction_id),
            Value::Text(d.decision.as_str().into()),
            opt_blob(&d.signature_a),
            opt_blob(&d.signature_b),
            Value::Text(d.requested_by.clone()),
            Value::Int(d.decided_at.as_micros()),
        ],
    )
}

/// An arbiter node's decision on a receipt node's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArbitrationRow {
    /// The receipt server (hex of its id, field 2).
    pub node: String,
    /// SHA-256 of fields 1–7 the decision was taken on (a later request must show the same).
    pub case_hash: Option<Vec<u8>>,
    /// The transaction.
    pub transaction_id: i64,
    /// Which decision.
    pub decision: DecisionKind,
    /// A's signature, when resolved.
    pub signature_a: Option<Vec<u8>>,
    /// B's signature, when resolved.
    pub signature_b: Option<Vec<u8>>,
    /// When decided.
    pub decided_at: Timestamp,
}

/// Records an arbiter node's first decision on a transaction (the primary key refuses a
/// second: the batch fails and the caller reads the one stored).
pub fn insert_arbitration(d: &ArbitrationRow) -> Attachment {
    row(
        "INSERT INTO arbitrations (node, transaction_id, decision, signature_a, signature_b, \
         decided_at, case_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            Value::Text(d.node.clone()),
            Value::Int(d.transaction_id),
            Value::Text(d.decision.as_str().into()),
            opt_blob(&d.signature_a),
            opt_blob(&d.signature_b),
            Value::Int(d.decided_at.as_micros()),
            opt_blob(&d.case_hash),
        ],
    )
}

fn decision(r: &AnyRow) -> Result<DecisionRow, StoreError> {
    Ok(DecisionRow {
        transaction_id: r.try_get("transaction_id")?,
        decision: crate::rows::state(r, "decision", DecisionKind::parse)?,
        signature_a: r.try_get("signature_a")?,
        signature_b: r.try_get("signature_b")?,
        requested_by: r.try_get("requested_by")?,
        decided_at: Timestamp(r.try_get("decided_at")?),
    })
}

/// A journal entry as stored (for a receipt package's inclusion section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntryRow {
    /// Position.
    pub seq: i64,
    /// Time (µs).
    pub at: i64,
    /// Previous hash.
    pub prev_hash: Vec<u8>,
    /// This entry's hash.
    pub hash: Vec<u8>,
    /// Exact body.
    pub body: Vec<u8>,
}

fn journal_row(r: &AnyRow) -> Result<JournalEntryRow, StoreError> {
    Ok(JournalEntryRow {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
        body: r.try_get("body")?,
    })
}

impl Store {
    /// An arbiter node's decision on a receipt node's transaction, if taken.
    pub async fn arbitration(
        &self,
        node: &str,
        transaction_id: i64,
    ) -> Result<Option<ArbitrationRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT node, transaction_id, decision, signature_a, signature_b, decided_at, \
                 case_hash FROM arbitrations WHERE node = $1 AND transaction_id = $2"
                    .into(),
                vec![Value::Text(node.into()), Value::Int(transaction_id)],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(ArbitrationRow {
                    node: r.try_get("node")?,
                    case_hash: r.try_get("case_hash")?,
                    transaction_id: r.try_get("transaction_id")?,
                    decision: crate::rows::state(r, "decision", DecisionKind::parse)?,
                    signature_a: r.try_get("signature_a")?,
                    signature_b: r.try_get("signature_b")?,
                    decided_at: Timestamp(r.try_get("decided_at")?),
                })
            })
            .transpose()
    }

    /// When a party certificate was revoked, if it was.
    pub async fn party_revoked_at(&self, serial: &str) -> Result<Option<Timestamp>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT revoked_at FROM party_revocations WHERE certificate_serial = $1".into(),
                vec![Value::Text(serial.into())],
            )
            .await?;
        rows.first()
            .map(|r| Ok(Timestamp(r.try_get("revoked_at")?)))
            .transpose()
    }

    /// When each of two certificates was revoked (`None`: not revoked), in one read.
    pub async fn parties_revoked_at(
        &self,
        serials: [&str; 2],
    ) -> Result<[Option<Timestamp>; 2], StoreError> {
        let rows = self
            .fetch_all(
                "SELECT certificate_serial, revoked_at FROM party_revocations \
                 WHERE certificate_serial IN ($1, $2)"
                    .into(),
                serials.iter().map(|s| Value::Text(s.to_string())).collect(),
            )
            .await?;
        let revoked: Vec<(String, Timestamp)> = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("certificate_serial")?,
                    Timestamp(r.try_get("revoked_at")?),
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(serials.map(|s| revoked.iter().find(|(k, _)| k == s).map(|(_, at)| *at)))
    }

    /// Two parties by name (the same name twice is allowed), in one read.
    pub async fn receipt_parties(
        &self,
        names: [&str; 2],
    ) -> Result<[Option<PartyRow>; 2], StoreError> {
        let rows = self
            .fetch_all(
                "SELECT name, role, certificate, fingerprint, bls_key, token_serial, created_at \
                 FROM receipt_parties WHERE name IN ($1, $2)"
                    .into(),
                names.iter().map(|n| Value::Text(n.to_string())).collect(),
            )
            .await?;
        let rows: Vec<PartyRow> = rows.iter().map(party).collect::<Result<_, _>>()?;
        Ok(names.map(|n| rows.iter().find(|p| p.name == n).cloned()))
    }

    /// A party by name.
    pub async fn receipt_party(&self, name: &str) -> Result<Option<PartyRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT name, role, certificate, fingerprint, bls_key, token_serial, created_at \
                 FROM receipt_parties WHERE name = $1"
                    .into(),
                vec![Value::Text(name.into())],
            )
            .await?;
        rows.first().map(party).transpose()
    }

    /// A token by serial.
    pub async fn receipt_token(&self, serial: &str) -> Result<Option<TokenRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{TOKEN_SELECT} WHERE serial = $1"),
                vec![Value::Text(serial.into())],
            )
            .await?;
        rows.first().map(token).transpose()
    }

    /// The token issued under a (namespaced) idempotency key.
    pub async fn receipt_token_by_key(&self, key: &str) -> Result<Option<TokenRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{TOKEN_SELECT} WHERE client_key = $1"),
                vec![Value::Text(key.into())],
            )
            .await?;
        rows.first().map(token).transpose()
    }

    /// Tokens, newest first (`holder` filters).
    pub async fn receipt_tokens(&self, holder: Option<&str>) -> Result<Vec<TokenRow>, StoreError> {
        let (sql, params) = match holder {
            Some(h) => (
                format!("{TOKEN_SELECT} WHERE holder = $1 ORDER BY created_at DESC LIMIT 1000"),
                vec![Value::Text(h.into())],
            ),
            None => (
                format!("{TOKEN_SELECT} ORDER BY created_at DESC LIMIT 1000"),
                vec![],
            ),
        };
        self.fetch_all(sql, params)
            .await?
            .iter()
            .map(token)
            .collect()
    }

    /// A warrant by serial.
    pub async fn warrant(&self, serial: &str) -> Result<Option<WarrantRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{WARRANT_SELECT} WHERE serial = $1"),
                vec![Value::Text(serial.into())],
            )
            .await?;
        rows.first().map(warrant).transpose()
    }

    /// Warrants, newest first (`issuer` filters).
    pub async fn warrants(&self, issuer: Option<&str>) -> Result<Vec<WarrantRow>, StoreError> {
        let base = WARRANT_SELECT;
        let (sql, params) = match issuer {
            Some(i) => (
                format!("{base} WHERE issuer = $1 ORDER BY created_at DESC LIMIT 1000"),
                vec![Value::Text(i.into())],
            ),
            None => (
                format!("{base} ORDER BY created_at DESC LIMIT 1000"),
                vec![],
            ),
        };
        self.fetch_all(sql, params)
            .await?
            .iter()
            .map(warrant)
            .collect()
    }

    /// A receipt by transaction id.
    pub async fn receipt(&self, transaction_id: i64) -> Result<Option<ReceiptRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{RECEIPT_SELECT} WHERE transaction_id = $1"),
                vec![Value::Int(transaction_id)],
            )
            .await?;
        rows.first().map(receipt).transpose()
    }

    /// The receipt offered under a (namespaced) idempotency key.
    /// Fair exchanges still offered (B never answered) made before `before`, oldest first.
    pub async fn unanswered_exchanges(
        &self,
        before: Timestamp,
        limit: i64,
    ) -> Result<Vec<ReceiptRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!(
                    "{RECEIPT_SELECT} WHERE fair = $1 AND state = $2 AND created_at < $3 \
                     ORDER BY created_at LIMIT $4"
                ),
                vec![
                    Value::Int(1),
                    Value::Text(ReceiptState::Offered.as_str().into()),
                    Value::Int(before.as_micros()),
                    Value::Int(limit),
                ],
            )
            .await?;
        rows.iter().map(receipt).collect()
    }

    pub async fn receipt_by_key(&self, key: &str) -> Result<Option<ReceiptRow>, StoreError> {
        let rows = self
            .fetch_all(
                format!("{RECEIPT_SELECT} WHERE client_key = $1"),
                vec![Value::Text(key.into())],
            )
            .await?;
        rows.first().map(receipt).transpose()
    }

    /// Receipts a party is in (either side), newest first; all for `None`.
    pub async fn receipts(
        &self,
        party: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ReceiptRow>, StoreError> {
        let (sql, params) = match party {
            Some(p) => (
                format!(
                    "{RECEIPT_SELECT} WHERE party_a = $1 OR party_b = $1 OR created_by = $1 \
                     ORDER BY created_at DESC LIMIT $2"
                ),
                vec![Value::Text(p.into()), Value::Int(limit)],
            ),
            None => (
                format!("{RECEIPT_SELECT} ORDER BY created_at DESC LIMIT $1"),
                vec![Value::Int(limit)],
            ),
        };
        self.fetch_all(sql, params)
            .await?
            .iter()
            .map(receipt)
            .collect()
    }

    /// Signed receipts written to a token and not acknowledged yet, oldest first.
    pub async fn unacked_writes(&self, serial: &str) -> Result<Vec<ReceiptRow>, StoreError> {
        self.fetch_all(
            format!(
                "{RECEIPT_SELECT} WHERE token_serial = $1 AND secure_write IS NOT NULL \
                 AND acked_at IS NULL ORDER BY created_at LIMIT 100"
            ),
            vec![Value::Text(serial.into())],
        )
        .await?
        .iter()
        .map(receipt)
        .collect()
    }

    /// The arbiter's decision on a transaction.
    pub async fn arbiter_decision(
        &self,
        transaction_id: i64,
    ) -> Result<Option<DecisionRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT transaction_id, decision, signature_a, signature_b, requested_by, \
                 decided_at FROM arbiter_decisions WHERE transaction_id = $1"
                    .into(),
                vec![Value::Int(transaction_id)],
            )
            .await?;
        rows.first().map(decision).transpose()
    }

    /// Journal entries `from..` in order, at most `limit` (for an exported log).
    pub async fn journal_range(
        &self,
        from: i64,
        limit: i64,
    ) -> Result<Vec<JournalEntryRow>, StoreError> {
        self.fetch_all(
            "SELECT seq, at, prev_hash, hash, body FROM journal WHERE seq >= $1 ORDER BY seq LIMIT $2"
                .into(),
            vec![Value::Int(from), Value::Int(limit)],
        )
        .await?
        .iter()
        .map(journal_row)
        .collect()
    }

    /// The journal entry written under an idempotency key.
    pub async fn journal_entry_by_key(
        &self,
        key: &str,
    ) -> Result<Option<JournalEntryRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT seq, at, prev_hash, hash, body FROM journal WHERE idempotency_key = $1"
                    .into(),
                vec![Value::Text(key.into())],
            )
            .await?;
        rows.first().map(journal_row).transpose()
    }
}
