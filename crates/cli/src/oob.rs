//! Out-of-band authentication from the command line (SPEC A1–A7): the subscriber directory,
//! sessions for every application, their confirmation with the code from channel B, and what
//! verified sessions leave behind (certificates, registered mail, offers, statements).
//!
//! Every command speaks the node's HTTP API through [`Client`], like the other client
//! commands. Opening a session is a write that may place a hold, so it always carries an
//! `Idempotency-Key` (generated and printed when none is given): re-running an interrupted
//! command returns the first session instead of sending a second code.
//!
//! Key decision: `tally auth confirm` shows the transaction in clear, as the node stored it,
//! before it asks for the code, and sends that transaction back with the code (`confirm`), so
//! the node checks that what the user saw is what the code was sent for (A3/A4). The code is
//! read from `--code` or the terminal, held in a [`Secret`] and never printed. Refusals
//! (`wrong_code`, `expired`, `too_many_attempts`, `session_closed`, `transaction_mismatch`)
//! are explained and exit with status 1; nothing was executed in any of them.
//! Rejected: confirming without showing the session first (the user would authorise blind),
//! and echoing the code back in any output.

use crate::accounts::transfer_summary;
use crate::client::{Conn, idempotency_key};
use crate::legacy::{ApiFailure, LegacyClient as Client, s, urlencode};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tally_kernel::{Amount, Currency, Secret, Timestamp};

// ----- clap: raw arguments -----------------------------------------------------------------

/// `tally subscriber …`
#[derive(Subcommand)]
pub enum SubscriberCommand {
    /// Add a user to the subscriber directory, or set the stored account used for its
    /// payments with contract.
    Add(SubscriberAddArgs),
    /// A user's second-channel addresses, where codes are sent.
    #[command(subcommand)]
    Address(AddressCommand),
    /// Issue a certificate (operator only) naming the user's second-channel address, so
    /// sessions can reach the user without the directory (`--certificate` on `tally auth`).
    Certificate(CertificateArgs),
}

#[derive(Args)]
pub struct SubscriberAddArgs {
    /// The user's identifier.
    user: String,
    /// The user's account debited by payments with contract (`tally auth pay` without
    /// --payer-account).
    #[arg(long, value_name = "ID")]
    contract_account: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `tally subscriber address …`
#[derive(Subcommand)]
pub enum AddressCommand {
    /// Add an address: a code is sent to it, and the address is used once the code is
    /// confirmed with `tally auth confirm SESSION`.
    Add(AddressAddArgs),
    /// List a user's addresses and whether each is verified.
    List(UserArgs),
}

#[derive(Args)]
pub struct AddressAddArgs {
    /// The user's identifier.
    user: String,
    /// email, sms, webhook or dev (dev needs `tally serve --dev`).
    #[arg(long)]
    channel: String,
    /// The e-mail address, phone number (E.164), URL or dev-inbox name.
    #[arg(long)]
    address: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct CertificateArgs {
    /// The user the certificate is issued to.
    user: String,
    /// The channel written into the certificate: email, sms, webhook or dev.
    #[arg(long)]
    channel: String,
    /// The address written into the certificate.
    #[arg(long)]
    address: String,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Writes PREFIX.pem (the certificate) and PREFIX.key (its private key, mode 0600); both
    /// must not exist yet.
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct UserArgs {
    /// The user's identifier.
    user: String,
    #[command(flatten)]
    conn: Conn,
}

/// Where the code goes and how to retry safely; common to every session opened here.
#[derive(Args)]
pub struct OpenOpts {
    /// Send the code to the user's verified address of this kind (email, sms, webhook, dev).
    #[arg(long)]
    channel: Option<String>,
    /// A certificate from this node's CA (`tally subscriber certificate`) whose address
    /// names where the code goes, instead of the directory.
    #[arg(long, value_name = "FILE.pem")]
    certificate: Option<PathBuf>,
    /// Retry-safe key: the same key returns the first session. Generated and printed when
    /// absent.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `tally auth …`
#[derive(Subcommand)]
pub enum AuthCommand {
    /// Open a sign-in session: on confirmation the user gets a short-lived access token.
    Login(LoginArgs),
    /// Certify a transfer between accounts: the code is bound to the amount and the
    /// accounts, and the money moves when it is confirmed. At or below the payee's threshold
    /// (`tally rule set`) the transfer executes at once.
    Transfer(AuthTransferArgs),
    /// Certify a bet: the stake goes to the bookmaker when the code is confirmed.
    Bet(BetArgs),
    /// A merchant asks a user to pay: the amount is held now and paid to the merchant when
    /// the user confirms (released if not). Without --payer-account the user's stored
    /// account is debited (payment with contract).
    Pay(PayArgs),
    /// Payment through the operator as trustee: the merchant is guaranteed now, the user is
    /// billed on the statement, the merchant is paid at `tally trustee settle`.
    Trustee(TrusteeArgs),
    /// Submit a form (a remote declaration); confirming it returns a signed receipt.
    Declare(DeclareArgs),
    /// Open the user's personalised offers mailbox; confirming it shows the offers.
    Offers(OffersArgs),
    /// Confirm a session with the code received on the second channel: shows what is being
    /// authorised, asks for the code (or takes --code) and prints the result.
    Confirm(ConfirmArgs),
    /// Show a session: what it authorises, where the code went, its state and expiry.
    Show(SessionArgs),
    /// Cancel an open session (a payment's hold is released).
    Cancel(SessionArgs),
    /// A user's recent sessions, newest first.
    Sessions(UserArgs),
}

#[derive(Args)]
pub struct LoginArgs {
    /// The user signing in.
    user: String,
    #[command(flatten)]
    open: OpenOpts,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct AuthTransferArgs {
    /// The user certifying the transfer (the owner of --from).
    #[arg(long)]
    user: String,
    /// The user's account, debited.
    #[arg(long, value_name = "ACCOUNT")]
    from: String,
    /// The beneficiary's account, credited.
    #[arg(long, value_name = "ACCOUNT")]
    to: String,
    /// Amount with currency, e.g. "12.50 EUR".
    #[arg(long)]
    amount: String,
    /// What for (shown with the code).
    #[arg(long, default_value = "")]
    memo: String,
    #[command(flatten)]
    open: OpenOpts,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct BetArgs {
    /// The user betting (the owner of --from).
    #[arg(long)]
    user: String,
    /// The user's account, debited by the stake.
    #[arg(long, value_name = "ACCOUNT")]
    from: String,
    /// The bookmaker's account.
    #[arg(long, value_name = "ACCOUNT")]
    to: String,
    /// The stake with currency, e.g. "5.00 EUR".
    #[arg(long, value_name = "AMOUNT")]
    stake: String,
    /// The bet as the user sees it.
    #[arg(long, value_name = "TEXT")]
    bet: String,
    #[command(flatten)]
    open: OpenOpts,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct PayArgs {
    /// The paying user.
    #[arg(long)]
    user: String,
    /// The merchant's account, credited (the caller must be that merchant or the operator).
    #[arg(long, value_name = "ACCOUNT")]
    merchant_account: String,
    /// Amount with currency, e.g. "12.50 EUR".
    #[arg(long)]
    amount: String,
    /// What is being bought (shown with the code).
    #[arg(long)]
    description: String,
    /// The user's account to debit (payment without contract).
    #[arg(long, value_name = "ACCOUNT")]
    payer_account: Option<String>,
    /// The payment terminal's name, when a terminal enters the amount.
    #[arg(long, value_name = "NAME")]
    terminal: Option<String>,
    #[command(flatten)]
    open: OpenOpts,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct TrusteeArgs {
    /// The paying user (billed on its statement).
    #[arg(long)]
    user: String,
    /// The merchant's account, paid at settlement.
    #[arg(long, value_name = "ACCOUNT")]
    merchant_account: String,
    /// Amount with currency, e.g. "12.50 EUR".
    #[arg(long)]
    amount: String,
    /// What is being bought (shown with the code).
    #[arg(long)]
    description: String,
    #[command(flatten)]
    open: OpenOpts,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct DeclareArgs {
    /// The declaring user.
    #[arg(long)]
    user: String,
    /// What the form is (shown with the code).
    #[arg(long)]
    title: String,
    /// The filled-in form (text or JSON); the code is bound to its SHA-256.
    #[arg(long, value_name = "FILE")]
    form_file: PathBuf,
    #[command(flatten)]
    open: OpenOpts,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct OffersArgs {
    /// Whose offers.
    user: String,
    #[command(flatten)]
    open: OpenOpts,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct ConfirmArgs {
    /// The session number (printed when it was opened).
    session: String,
    /// The code from the second channel; asked for on the terminal when absent.
    #[arg(long)]
    code: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct SessionArgs {
    /// The session number.
    session: String,
    #[command(flatten)]
    conn: Conn,
}

/// `tally mail …`
#[derive(Subcommand)]
pub enum MailCommand {
    /// Send registered mail: the sender confirms with a code, then the mail is deposited and
    /// the recipient alerted.
    Send(MailSendArgs),
    /// Retrieve a registered mail: the recipient confirms with a code, then reads it; the
    /// sender is told and both keep a certificate.
    Retrieve(MailRetrieveArgs),
    /// Mail for and from a user (bodies of mail not yet retrieved are withheld).
    List(UserArgs),
}

#[derive(Args)]
pub struct MailSendArgs {
    /// The sender.
    #[arg(long, value_name = "USER")]
    from: String,
    /// The recipient (must have a verified address).
    #[arg(long, value_name = "USER")]
    to: String,
    /// Subject line.
    #[arg(long)]
    subject: String,
    /// The text of the mail.
    #[arg(long, value_name = "FILE")]
    body_file: PathBuf,
    #[command(flatten)]
    open: OpenOpts,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct MailRetrieveArgs {
    /// The recipient.
    #[arg(long)]
    user: String,
    /// The mail's id (from the alert or `tally mail list`).
    mail_id: String,
    #[command(flatten)]
    open: OpenOpts,
    #[command(flatten)]
    conn: Conn,
}

/// `tally offer …`
#[derive(Subcommand)]
pub enum OfferCommand {
    /// Leave a personalised offer in a user's mailbox (merchants and the operator); the user
    /// reads it with `tally auth offers`.
    Send(OfferSendArgs),
}

#[derive(Args)]
pub struct OfferSendArgs {
    /// For whom.
    #[arg(long, value_name = "USER")]
    to: String,
    /// Subject line.
    #[arg(long)]
    subject: String,
    /// The offer's text.
    #[arg(long, value_name = "TEXT")]
    body: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct StatementArgs {
    /// Whose statement.
    user: String,
    /// From (inclusive), RFC 3339, e.g. 2026-11-01T00:00:00Z. Default: 31 days before --to.
    #[arg(long, value_name = "RFC3339")]
    from: Option<String>,
    /// To (exclusive), RFC 3339. Default: now.
    #[arg(long, value_name = "RFC3339")]
    to: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `tally rule …`
#[derive(Subcommand)]
pub enum RuleCommand {
    /// Set the threshold of a payee (a merchant for itself, the operator for anyone or for
    /// `operator`, the default): amounts above it need out-of-band confirmation, amounts at
    /// or below it execute at once.
    Set(RuleSetArgs),
}

#[derive(Args)]
pub struct RuleSetArgs {
    /// The payee the rule is for (`operator` sets the default).
    owner: String,
    /// Amounts above this need a code, e.g. "50.00 EUR" (one rule per currency).
    #[arg(long, value_name = "AMOUNT")]
    secured_above: String,
    #[command(flatten)]
    conn: Conn,
}

/// `tally trustee …`
#[derive(Subcommand)]
pub enum TrusteeCommand {
    /// End a trustee period (operator only): pay each merchant its trustee payments, less
    /// the operator's fee. Running it twice pays once.
    Settle(SettleArgs),
}

#[derive(Args)]
pub struct SettleArgs {
    /// Settle payments made before this time (RFC 3339). Default: now.
    #[arg(long, value_name = "RFC3339")]
    until: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

// ----- validation: raw text → what the API takes -------------------------------------------

/// `"12.50 EUR"`, checked here so a typo names its flag.
fn amount_arg(flag: &str, text: &str) -> anyhow::Result<String> {
    let amount: Amount = text
        .parse()
        .with_context(|| format!("{flag} {text:?}: expected e.g. \"12.50 EUR\""))?;
    if amount.minor <= 0 {
        bail!("{flag} {text:?}: must be positive");
    }
    Ok(amount.to_string())
}

/// An account id (a UUID).
fn account_arg(flag: &str, text: &str) -> anyhow::Result<String> {
    uuid::Uuid::parse_str(text)
        .map(|u| u.to_string())
        .with_context(|| format!("{flag} {text:?}: expected an account id (a UUID)"))
}

/// RFC 3339, checked locally.
fn time_arg(flag: &str, text: &str) -> anyhow::Result<String> {
    Timestamp::parse_rfc3339(text)
        .map(|_| text.to_string())
        .with_context(|| format!("{flag} {text:?}: expected RFC 3339, e.g. 2026-11-01T00:00:00Z"))
}

/// A session number: 32 hex digits.
fn session_arg(text: &str) -> anyhow::Result<String> {
    let t = text.trim().to_ascii_lowercase();
    if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("session {text:?}: expected the 32 hex digits printed when it was opened");
    }
    Ok(t)
}

fn read_text(flag: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))
}

// ----- presentation --------------------------------------------------------------------------

/// A JSON integer of µs since the epoch, as RFC 3339; `None` when absent.
fn time_at(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_i64)
        .map(|us| Timestamp(us).to_rfc3339())
}

/// A JSON integer of µs since the epoch, as RFC 3339; `-` when absent.
fn when(v: &Value, pointer: &str) -> String {
    time_at(v, pointer).unwrap_or_else(|| "-".to_string())
}

/// `verified 2026-…` from the time at `pointer`, or `not verified` when absent (`done` is
/// the word: verified, retrieved).
fn done_at(v: &Value, pointer: &str, done: &str) -> String {
    match time_at(v, pointer) {
        Some(t) => format!("{done} {t}"),
        None => format!("not {done}"),
    }
}

/// Minor units and a currency code as `12.50 EUR`.
fn money(minor: i64, code: &str) -> String {
    match Currency::from_code(code) {
        Ok(c) => Amount::new(minor, c).to_string(),
        Err(_) => format!("{minor} {code} (minor units)"),
    }
}

/// An `Amount` as serialised inside a session's purpose (`{"minor":1250,"currency":"EUR"}`).
fn amount_value(v: &Value) -> String {
    match (
        v.get("minor").and_then(Value::as_i64),
        v.get("currency").and_then(Value::as_str),
    ) {
        (Some(m), Some(c)) => money(m, c),
        _ => v.to_string(),
    }
}

fn seconds(total_s: i64) -> String {
    if total_s < 60 {
        return format!("{total_s} s");
    }
    format!(
        "{total_s} s ({}:{:02}:{:02})",
        total_s / 3600,
        (total_s / 60) % 60,
        total_s % 60
    )
}

/// What a session authorises, in clear: the lines after `authorises`.
fn purpose_text(user: &str, p: &Value) -> String {
    match p.get("type").and_then(Value::as_str) {
        Some("login") => format!("sign-in as {user}"),
        Some("message") => format!(
            "{}\n             content SHA-256 {}",
            s(p, "/title"),
            s(p, "/sha256")
        ),
        Some("transaction") => {
            let to_account = p
                .get("payee_account")
                .and_then(Value::as_str)
                .map(|a| format!(" (account {a})"))
                .unwrap_or_default();
            let from = p
                .get("payer_account")
                .and_then(Value::as_str)
                .map(|a| format!("\n             from account {a}"))
                .unwrap_or_default();
            format!(
                "{} to {}{to_account}{from}\n             for: {}",
                p.get("amount")
                    .map_or_else(|| "-".to_string(), amount_value),
                s(p, "/payee"),
                s(p, "/description"),
            )
        }
        _ => p.to_string(),
    }
}

fn session_summary(v: &Value) -> String {
    let mut out = format!(
        "session      {}\nuser         {}\napplication  {}\nstate        {}\nauthorises   {}\ncode sent to {} {} (delivery {})\nexpires      {}\nattempts     {} left",
        s(v, "/session"),
        s(v, "/user"),
        s(v, "/application"),
        s(v, "/state"),
        purpose_text(s(v, "/user"), v.get("purpose").unwrap_or(&Value::Null)),
        s(v, "/channel"),
        s(v, "/address"),
        s(v, "/delivery"),
        when(v, "/expires_at"),
        v.get("attempts_left").and_then(Value::as_u64).unwrap_or(0),
    );
    if let Some(e) = v.get("delivery_error").and_then(Value::as_str) {
        out.push_str(&format!("\ndelivery     failed so far: {e}"));
    }
    if let Some(h) = v.get("hold_id").and_then(Value::as_str) {
        out.push_str(&format!("\nhold         {h}"));
    }
    out
}

/// The answer of `POST /v1/oob/sessions`.
fn opened_summary(v: &Value) -> String {
    match s(v, "/outcome") {
        "secured" => {
            let session = v.get("session").unwrap_or(&Value::Null);
            format!(
                "{}\nconfirm with `tally auth confirm {}`",
                session_summary(session),
                s(session, "/session")
            )
        }
        "normal" => format!(
            "executed at once: at or below the payee's threshold, no code needed\n{}",
            ledger_transfer(v.get("transfer").unwrap_or(&Value::Null))
        ),
        _ => v.to_string(),
    }
}

/// The transfer of a normal (below the threshold) answer, in the format of `tally transfer`.
fn ledger_transfer(v: &Value) -> String {
    match serde_json::from_value::<tally_client::wire::ledger::TransferDto>(v.clone()) {
        Ok(t) => transfer_summary(&t),
        Err(_) => v.to_string(),
    }
}

/// A node-signed certificate (a `SignedRecord`): what it certifies, who signed, and the
/// record itself on one line, to keep or to verify offline.
fn certificate_text(c: &Value) -> String {
    let body: Value = c
        .get("bytes")
        .and_then(Value::as_str)
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    format!(
        "certificate  {} for session {}, signed by {}\nrecord       {}",
        s(&body, "/kind"),
        s(&body, "/session"),
        s(c, "/signer"),
        serde_json::to_string(c).unwrap_or_default()
    )
}

fn mail_text(m: &Value) -> String {
    format!(
        "mail         {}\nfrom         {}\nto           {}\nsubject      {}\ndeposited    {}\n\n{}",
        s(m, "/id"),
        s(m, "/sender"),
        s(m, "/recipient"),
        s(m, "/subject"),
        when(m, "/deposited_at"),
        s(m, "/body"),
    )
}

/// What a verified session produced (its `result`), plus a login's token.
fn result_text(application: &str, result: &Value, access_token: Option<&str>) -> String {
    let mut lines = Vec::new();
    if let Some(t) = access_token {
        lines.push(format!("access token {t}"));
        lines.push(format!(
            "valid until  {}",
            when(result, "/access_token_expires_at")
        ));
        lines.push("(send it as `Authorization: Bearer …` to /v1/oob/whoami)".to_string());
    } else if result.get("access_token_expires_at").is_some() {
        lines.push(format!(
            "access token issued, valid until {}",
            when(result, "/access_token_expires_at")
        ));
    }
    if let Some(a) = result.get("address_verified").and_then(Value::as_str) {
        lines.push(format!(
            "address verified ({a}); codes can now be sent to it"
        ));
    }
    if let Some(h) = result.get("hold").and_then(Value::as_str) {
        lines.push(format!("hold {h} posted to the merchant"));
    }
    match (application, result.get("mail")) {
        ("mail_send", Some(id)) => lines.push(format!(
            "mail deposited: {}",
            id.as_str().unwrap_or_default()
        )),
        (_, Some(m)) if m.is_object() => lines.push(mail_text(m)),
        _ => {}
    }
    if let Some(offers) = result.get("offers").and_then(Value::as_array) {
        if offers.is_empty() {
            lines.push("no new offers".to_string());
        }
        for o in offers {
            lines.push(format!(
                "--- offer from {} ({})\nsubject      {}\n\n{}",
                s(o, "/sender"),
                when(o, "/deposited_at"),
                s(o, "/subject"),
                s(o, "/body")
            ));
        }
    }
    if let Some(c) = result.get("certificate") {
        lines.push(certificate_text(c));
    }
    lines.join("\n")
}

fn rows(v: &Value, empty: &str, line: impl Fn(&Value) -> String) -> String {
    let rows = v.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return empty.to_string();
    }
    rows.iter().map(line).collect::<Vec<_>>().join("\n")
}

// ----- commands --------------------------------------------------------------------------

pub async fn subscriber(cmd: SubscriberCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SubscriberCommand::Add(a) => {
            let c = Client::new(&a.conn)?;
            let contract = a
                .contract_account
                .as_deref()
                .map(|t| account_arg("--contract-account", t))
                .transpose()?;
            let body = json!({ "contract_account": contract });
            c.call(
                Method::POST,
                &format!("/v1/subscribers/{}", urlencode(&a.user)),
                Some(&body),
                None,
            )
            .await?;
            match contract {
                Some(acc) => println!("subscriber {} (stored account {acc})", a.user),
                None => println!("subscriber {}", a.user),
            }
            Ok(ExitCode::SUCCESS)
        }
        SubscriberCommand::Address(AddressCommand::Add(a)) => {
            let body = json!({ "channel": a.channel, "address": a.address });
            Client::new(&a.conn)?
                .call_show(
                    Method::POST,
                    &format!("/v1/subscribers/{}/addresses", urlencode(&a.user)),
                    Some(&body),
                    None,
                    |v| {
                        format!(
                            "{}\na code was sent to the new address; confirm with `tally auth confirm {}`",
                            session_summary(v),
                            s(v, "/session")
                        )
                    },
                )
                .await
        }
        SubscriberCommand::Address(AddressCommand::List(a)) => {
            Client::new(&a.conn)?
                .get_show(
                    &format!("/v1/subscribers/{}/addresses", urlencode(&a.user)),
                    |v| {
                        rows(v, "(no addresses)", |r| {
                            format!(
                                "{:8} {:32} {}",
                                s(r, "/channel"),
                                s(r, "/address"),
                                done_at(r, "/verified_at", "verified")
                            )
                        })
                    },
                )
                .await
        }
        SubscriberCommand::Certificate(a) => {
            let c = Client::new(&a.conn)?;
            let pem_path = with_extension(&a.out, "pem");
            let key_path = with_extension(&a.out, "key");
            for p in [&pem_path, &key_path] {
                if p.exists() {
                    bail!("{} exists; choose another --out", p.display());
                }
            }
            let body = json!({ "channel": a.channel, "address": a.address, "days": a.days });
            let v = c
                .call(
                    Method::POST,
                    &format!("/v1/subscribers/{}/certificate", urlencode(&a.user)),
                    Some(&body),
                    None,
                )
                .await?;
            let certificate = v
                .get("certificate")
                .and_then(Value::as_str)
                .context("the node answered without a certificate")?;
            let key = Secret::new(
                v.get("private_key")
                    .and_then(Value::as_str)
                    .context("the node answered without a private key")?
                    .to_string(),
            );
            tally_service::identity::write_private_file(&key_path, key.expose().as_bytes())?;
            std::fs::write(&pem_path, certificate)
                .with_context(|| format!("writing {}", pem_path.display()))?;
            println!(
                "certificate  {}\nprivate key  {} (mode 0600)\nnames        {}:{} for {}\nuse it with  tally auth … --certificate {}",
                pem_path.display(),
                key_path.display(),
                a.channel,
                a.address,
                a.user,
                pem_path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `PREFIX` + `.ext` (never replacing a dot already in the prefix).
fn with_extension(prefix: &Path, ext: &str) -> PathBuf {
    let mut p = prefix.as_os_str().to_owned();
    p.push(".");
    p.push(ext);
    PathBuf::from(p)
}

/// Opens a session for `user`; `app` carries the `application` tag and its fields.
async fn open(
    conn: &Conn,
    user: &str,
    mut app: Value,
    opts: &OpenOpts,
) -> anyhow::Result<ExitCode> {
    let c = Client::new(conn)?;
    app["user"] = json!(user);
    if let Some(ch) = &opts.channel {
        app["channel"] = json!(ch);
    }
    if let Some(path) = &opts.certificate {
        app["certificate"] = json!(read_text("--certificate", path)?);
    }
    let key = idempotency_key(&opts.idempotency_key);
    c.call_show(
        Method::POST,
        "/v1/oob/sessions",
        Some(&app),
        Some(&key),
        opened_summary,
    )
    .await
}

pub async fn auth(cmd: AuthCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuthCommand::Login(a) => {
            open(&a.conn, &a.user, json!({ "application": "login" }), &a.open).await
        }
        AuthCommand::Transfer(a) => {
            let app = json!({
                "application": "transfer",
                "debit_account": account_arg("--from", &a.from)?,
                "credit_account": account_arg("--to", &a.to)?,
                "amount": amount_arg("--amount", &a.amount)?,
                "memo": a.memo,
            });
            open(&a.conn, &a.user, app, &a.open).await
        }
        AuthCommand::Bet(a) => {
            let app = json!({
                "application": "bet",
                "debit_account": account_arg("--from", &a.from)?,
                "credit_account": account_arg("--to", &a.to)?,
                "stake": amount_arg("--stake", &a.stake)?,
                "bet": a.bet,
            });
            open(&a.conn, &a.user, app, &a.open).await
        }
        AuthCommand::Pay(a) => {
            let payer = a
                .payer_account
                .as_deref()
                .map(|t| account_arg("--payer-account", t))
                .transpose()?;
            let app = json!({
                "application": "payment",
                "merchant_account": account_arg("--merchant-account", &a.merchant_account)?,
                "amount": amount_arg("--amount", &a.amount)?,
                "description": a.description,
                "payer_account": payer,
                "terminal": a.terminal,
            });
            open(&a.conn, &a.user, app, &a.open).await
        }
        AuthCommand::Trustee(a) => {
            let app = json!({
                "application": "trustee",
                "merchant_account": account_arg("--merchant-account", &a.merchant_account)?,
                "amount": amount_arg("--amount", &a.amount)?,
                "description": a.description,
            });
            open(&a.conn, &a.user, app, &a.open).await
        }
        AuthCommand::Declare(a) => {
            let app = json!({
                "application": "declaration",
                "title": a.title,
                "form": read_text("--form-file", &a.form_file)?,
            });
            open(&a.conn, &a.user, app, &a.open).await
        }
        AuthCommand::Offers(a) => {
            open(
                &a.conn,
                &a.user,
                json!({ "application": "offers" }),
                &a.open,
            )
            .await
        }
        AuthCommand::Confirm(a) => confirm(a).await,
        AuthCommand::Show(a) => {
            let c = Client::new(&a.conn)?;
            let number = session_arg(&a.session)?;
            c.get_show(&format!("/v1/oob/sessions/{number}"), |v| {
                let mut out = session_summary(v);
                if let Some(r) = v.get("result").filter(|r| !r.is_null()) {
                    out.push('\n');
                    out.push_str(&result_text(s(v, "/application"), r, None));
                }
                out
            })
            .await
        }
        AuthCommand::Cancel(a) => {
            let c = Client::new(&a.conn)?;
            let number = session_arg(&a.session)?;
            c.call_show(
                Method::POST,
                &format!("/v1/oob/sessions/{number}/cancel"),
                Some(&json!({})),
                None,
                |v| {
                    let released = if v.get("hold_id").is_some_and(|h| !h.is_null()) {
                        "; the hold is released"
                    } else {
                        ""
                    };
                    format!("{}\ncancelled{released}", session_summary(v))
                },
            )
            .await
        }
        AuthCommand::Sessions(a) => {
            Client::new(&a.conn)?
                .get_show(
                    &format!("/v1/oob/sessions?user={}", urlencode(&a.user)),
                    |v| {
                        rows(v, "(no sessions)", |r| {
                            let what = purpose_text(
                                s(r, "/user"),
                                r.get("purpose").unwrap_or(&Value::Null),
                            );
                            let first = what.lines().next().unwrap_or_default().to_string();
                            format!(
                                "{}  {:14} {:9} expires {}  {}",
                                s(r, "/session"),
                                s(r, "/application"),
                                s(r, "/state"),
                                when(r, "/expires_at"),
                                first
                            )
                        })
                    },
                )
                .await
        }
    }
}

/// Refusals of a verification, with what the user can do about each.
fn refusal_hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "wrong_code" => "nothing was executed; type the code again (check the latest message)",
        "expired" => "nothing was executed; open a new session for a new code",
        "too_many_attempts" => "the session is locked and nothing was executed; open a new session",
        "session_closed" => {
            "the session is already verified or cancelled; nothing more was executed"
        }
        "transaction_mismatch" => {
            "the transaction shown here is not the one the code was sent for; nothing was executed"
        }
        _ => return None,
    })
}

async fn confirm(a: ConfirmArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let number = session_arg(&a.session)?;
    let view = c
        .call(
            Method::GET,
            &format!("/v1/oob/sessions/{number}"),
            None,
            None,
        )
        .await?;
    // What is being authorised, in clear, before the code is asked for (on stderr with --json
    // so stdout stays one JSON document).
    let shown = session_summary(&view);
    if c.json {
        eprintln!("{shown}");
    } else {
        println!("{shown}");
    }
    let state = s(&view, "/state");
    if state != "open" && a.code.is_none() {
        eprintln!("not authorized: session_closed: the session is {state}; nothing to confirm");
        return Ok(ExitCode::FAILURE);
    }
    let code = match a.code {
        Some(code) => Secret::new(code),
        None => read_code(s(&view, "/channel"), s(&view, "/address")).await?,
    };
    let code_text = code.expose().trim();
    if code_text.is_empty() {
        bail!("no code given");
    }
    // The transaction the user was shown goes back with the code: the node refuses the code
    // if it was sent for another one (integrity, A3).
    let confirm = view
        .get("purpose")
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("transaction"))
        .map(|p| {
            let mut t = p.clone();
            if let Some(o) = t.as_object_mut() {
                o.remove("type");
            }
            t
        });
    let mut body = json!({ "code": code_text });
    if let Some(t) = confirm {
        body["confirm"] = t;
    }
    let answer = c
        .call(
            Method::POST,
            &format!("/v1/oob/sessions/{number}/verify"),
            Some(&body),
            None,
        )
        .await;
    drop(body);
    let v = match answer {
        Ok(v) => v,
        Err(e) => {
            if let Some(f) = e.downcast_ref::<ApiFailure>()
                && let Some(hint) = refusal_hint(&f.code)
            {
                eprintln!("not authorized: {}: {}\n{hint}", f.code, f.message);
                return Ok(ExitCode::FAILURE);
            }
            return Err(e);
        }
    };
    c.show(&v, |v| {
        let session = v.get("session").unwrap_or(&Value::Null);
        let result = session.get("result").unwrap_or(&Value::Null);
        let text = result_text(
            s(session, "/application"),
            result,
            v.get("access_token").and_then(Value::as_str),
        );
        if text.is_empty() {
            "authorized".to_string()
        } else {
            format!("authorized\n{text}")
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// Asks for the code on the terminal (stderr) and reads one line from stdin.
async fn read_code(channel: &str, address: &str) -> anyhow::Result<Secret<String>> {
    use std::io::Write;
    eprint!("code sent to {channel} {address}: ");
    let _ = std::io::stderr().flush();
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the code from the terminal")?;
        Ok(Secret::new(line))
    })
    .await?
}

pub async fn mail(cmd: MailCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MailCommand::Send(a) => {
            let app = json!({
                "application": "mail_send",
                "recipient": a.to,
                "subject": a.subject,
                "body": read_text("--body-file", &a.body_file)?,
            });
            open(&a.conn, &a.from, app, &a.open).await
        }
        MailCommand::Retrieve(a) => {
            let id = uuid::Uuid::parse_str(&a.mail_id)
                .with_context(|| format!("MAIL_ID {:?}: expected a mail id (a UUID)", a.mail_id))?;
            let app = json!({ "application": "mail_retrieve", "mail_id": id.to_string() });
            open(&a.conn, &a.user, app, &a.open).await
        }
        MailCommand::List(a) => {
            Client::new(&a.conn)?
                .get_show(&format!("/v1/mail?user={}", urlencode(&a.user)), |v| {
                    rows(v, "(no mail)", |m| {
                        format!(
                            "{}  {:10} {} -> {}  {:?}  {}  {}",
                            when(m, "/deposited_at"),
                            s(m, "/kind"),
                            s(m, "/sender"),
                            s(m, "/recipient"),
                            s(m, "/subject"),
                            done_at(m, "/retrieved_at", "retrieved"),
                            s(m, "/id"),
                        )
                    })
                })
                .await
        }
    }
}

pub async fn offer(cmd: OfferCommand) -> anyhow::Result<ExitCode> {
    let OfferCommand::Send(a) = cmd;
    let c = Client::new(&a.conn)?;
    let body = json!({ "recipient": a.to, "subject": a.subject, "body": a.body });
    c.call_show(Method::POST, "/v1/offers", Some(&body), None, |v| {
        format!(
            "offer {} left for {}; they read it with `tally auth offers {}`",
            s(v, "/id"),
            a.to,
            a.to
        )
    })
    .await
}

pub async fn statement(a: StatementArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let mut query = Vec::new();
    if let Some(f) = &a.from {
        query.push(format!("from={}", urlencode(&time_arg("--from", f)?)));
    }
    if let Some(t) = &a.to {
        query.push(format!("to={}", urlencode(&time_arg("--to", t)?)));
    }
    let mut path = format!("/v1/subscribers/{}/statement", urlencode(&a.user));
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    c.get_show(&path, statement_text).await
}

fn statement_text(v: &Value) -> String {
    let mut out = vec![format!(
        "statement    {} from {} to {}",
        s(v, "/user"),
        when(v, "/from"),
        when(v, "/to")
    )];
    let entries = v
        .get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if entries.is_empty() {
        out.push("(no entries)".to_string());
    }
    for e in &entries {
        let amount = match (
            e.get("amount_minor").and_then(Value::as_i64),
            e.get("currency").and_then(Value::as_str),
        ) {
            (Some(m), Some(c)) if !c.is_empty() => money(m, c),
            _ => "-".to_string(),
        };
        let payee = match s(e, "/payee") {
            "" | "-" => String::new(),
            p => format!("to {p}"),
        };
        let settled = if e.get("settled_at").and_then(Value::as_i64).is_some() {
            "  (settled)"
        } else {
            ""
        };
        out.push(format!(
            "{}  {:13} {:>16}  {:12} {:>6}  {}{settled}",
            when(e, "/created_at"),
            s(e, "/kind"),
            amount,
            payee,
            seconds(e.get("duration_s").and_then(Value::as_i64).unwrap_or(0)),
            s(e, "/description"),
        ));
    }
    if let Some(totals) = v.get("totals").and_then(Value::as_object) {
        for (code, minor) in totals {
            out.push(format!(
                "total        {}",
                money(minor.as_i64().unwrap_or(0), code)
            ));
        }
    }
    out.push(format!(
        "session time {}",
        seconds(v.get("duration_s").and_then(Value::as_i64).unwrap_or(0))
    ));
    out.join("\n")
}

pub async fn certificates(a: UserArgs) -> anyhow::Result<ExitCode> {
    Client::new(&a.conn)?
        .get_show(
            &format!("/v1/certificates?user={}", urlencode(&a.user)),
            |v| {
                rows(v, "(no certificates)", |r| {
                    let body = r.get("body").unwrap_or(&Value::Null);
                    format!(
                        "{}  {:19} session {}  signed by {}  {}",
                        when(r, "/created_at"),
                        s(r, "/kind"),
                        s(r, "/session"),
                        s(body, "/signer"),
                        s(r, "/id"),
                    )
                })
            },
        )
        .await
}

pub async fn rule(cmd: RuleCommand) -> anyhow::Result<ExitCode> {
    let RuleCommand::Set(a) = cmd;
    let c = Client::new(&a.conn)?;
    let amount = amount_arg_nonneg("--secured-above", &a.secured_above)?;
    let body = json!({ "secured_above": amount });
    c.call(
        Method::PUT,
        &format!("/v1/oob/rules/{}", urlencode(&a.owner)),
        Some(&body),
        None,
    )
    .await?;
    println!(
        "{}: payments and transfers above {amount} need a code; at or below, they execute at once",
        a.owner
    );
    Ok(ExitCode::SUCCESS)
}

/// Like [`amount_arg`], but zero is allowed (a threshold of zero secures everything).
fn amount_arg_nonneg(flag: &str, text: &str) -> anyhow::Result<String> {
    let amount: Amount = text
        .parse()
        .with_context(|| format!("{flag} {text:?}: expected e.g. \"50.00 EUR\""))?;
    if amount.minor < 0 {
        bail!("{flag} {text:?}: must not be negative");
    }
    Ok(amount.to_string())
}

pub async fn trustee(cmd: TrusteeCommand) -> anyhow::Result<ExitCode> {
    let TrusteeCommand::Settle(a) = cmd;
    let c = Client::new(&a.conn)?;
    let until = a
        .until
        .as_deref()
        .map(|u| time_arg("--until", u))
        .transpose()?;
    c.call_show(
        Method::POST,
        "/v1/trustee/settle",
        Some(&json!({ "until": until })),
        None,
        |v| {
            rows(v, "nothing to settle", |p| {
                let code = s(p, "/currency");
                let gross = p.get("gross_minor").and_then(Value::as_i64).unwrap_or(0);
                let fee = p.get("fee_minor").and_then(Value::as_i64).unwrap_or(0);
                format!(
                    "{}  {} payments  gross {}  fee {}  paid {}  transfer {}",
                    s(p, "/merchant_account"),
                    p.get("lines").and_then(Value::as_u64).unwrap_or(0),
                    money(gross, code),
                    money(fee, code),
                    money(gross - fee, code),
                    s(p, "/transfer"),
                )
            })
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked_before_any_request() {
        assert_eq!(amount_arg("--amount", "12.5 EUR").expect("ok"), "12.50 EUR");
        assert!(amount_arg("--amount", "0.00 EUR").is_err());
        assert!(amount_arg("--amount", "12.50").is_err());
        assert_eq!(
            amount_arg_nonneg("--secured-above", "0 EUR").expect("ok"),
            "0.00 EUR"
        );
        assert!(account_arg("--from", "alice").is_err());
        assert!(time_arg("--from", "yesterday").is_err());
        assert!(time_arg("--from", "2026-11-01T00:00:00Z").is_ok());
        assert!(session_arg("00").is_err());
        assert_eq!(
            session_arg(" 0123456789ABCDEF0123456789abcdef\n").expect("ok"),
            "0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn a_transaction_is_shown_in_clear() {
        let p = json!({"type": "transaction", "amount": {"minor": 1250, "currency": "EUR"},
                       "payer_account": "a", "payee": "bob", "payee_account": "b",
                       "description": "rent"});
        let text = purpose_text("alice", &p);
        assert!(text.starts_with("12.50 EUR to bob (account b)"), "{text}");
        assert!(
            text.contains("from account a") && text.contains("for: rent"),
            "{text}"
        );
        assert_eq!(
            purpose_text("alice", &json!({"type": "login"})),
            "sign-in as alice"
        );
    }

    #[test]
    fn statements_total_per_currency_and_time() {
        let v = json!({"user": "alice", "from": 0, "to": 1_000_000,
            "entries": [{"created_at": 0, "kind": "transfer", "amount_minor": 1250,
                         "currency": "EUR", "duration_s": 3, "payee": "bob",
                         "description": "rent"},
                        {"created_at": 0, "kind": "login", "amount_minor": 0,
                         "currency": "", "duration_s": 61, "payee": "",
                         "description": "login"}],
            "totals": {"EUR": 1250}, "duration_s": 64});
        let text = statement_text(&v);
        assert!(
            text.contains("12.50 EUR") && text.contains("rent"),
            "{text}"
        );
        assert!(text.contains("total        12.50 EUR"), "{text}");
        assert!(text.contains("session time 64 s (0:01:04)"), "{text}");
    }
}
