//! Out-of-band authentication from the command line (SPEC A1–A7): the subscriber directory,
//! sessions for every application, their confirmation with the code from channel B, and what
//! verified sessions leave behind (certificates, registered mail, offers, statements).
//!
//! Every command speaks the node's HTTP API through the typed client
//! ([`Client`](crate::client::Client)): requests are built from the wire types
//! (`tally_client::wire::oob`) and answers read as them, so a field renamed on the node does
//! not compile here. Opening a session is a write that may
//! place a hold, so it always carries an `Idempotency-Key` (generated and printed when none is
//! given): re-running an interrupted command returns the first session instead of sending a
//! second code.
//!
//! Key decision: `tally auth confirm` shows the transaction in clear, as the node stored it,
//! before it asks for the code, and sends that transaction back with the code (`confirm`), so
//! the node checks that what the user saw is what the code was sent for (A3/A4). The code is
//! read from `--code` or the terminal, held in a [`Secret`](tally_kernel::Secret) and never
//! printed. Refusals (`wrong_code`, `expired`, `too_many_attempts`, `session_closed`,
//! `transaction_mismatch`) are recognised by the node's stable code, explained, and exit with
//! status 1; nothing was executed in any of them.
//! Rejected: confirming without showing the session first (the user would authorise blind),
//! and echoing the code back in any output.
//!
//! Layout: this file holds the arguments and the entry points `main` calls; [`args`] checks
//! raw text, [`sessions`] opens and confirms sessions, [`directory`] keeps subscribers, their
//! addresses, certificates and thresholds, [`records`] reads and writes what sessions leave
//! behind (mail, offers, statements, certificates, trustee payouts), and [`print`](mod@print) turns
//! answers into the summaries people read.

mod args;
mod directory;
mod print;
mod records;
mod sessions;

pub(crate) use sessions::confirming;

use crate::client::Conn;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Payment through the operator as trustee: held on the user's trustee credit (set with
    /// `tally trustee limit`), the user billed and the merchant paid at `tally trustee settle`.
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
    /// The payee the rule is for (`operator` sets the default for every payee); with
    /// `--payer`, the payer.
    owner: String,
    /// Amounts above this need a code, e.g. "50.00 EUR" (one rule per currency and side).
    #[arg(long, value_name = "AMOUNT")]
    secured_above: String,
    /// The rule is on the payer's side: payments *by* OWNER above the amount need a code,
    /// whoever is paid (a payee's rule is about payments *to* OWNER).
    #[arg(long)]
    payer: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `tally trustee …`
#[derive(Subcommand)]
pub enum TrusteeCommand {
    /// End a trustee period (operator only): pay each merchant its trustee payments, less
    /// the operator's fee, and collect each user's debt from the operator's settlement
    /// account. Running it twice pays and collects once.
    Settle(SettleArgs),
    /// Set a user's trustee credit (operator only): the most it may owe through the trustee
    /// in the amount's currency. A payment beyond it is refused (`trustee_limit_reached`);
    /// the limit cannot go below what the user owes and holds.
    Limit(TrusteeLimitArgs),
    /// Show a user's trustee credit: limit, owed, held and available per currency.
    Credit(TrusteeCreditArgs),
}

#[derive(Args)]
pub struct TrusteeLimitArgs {
    /// The user.
    user: String,
    /// The limit, e.g. "100.00 EUR"; never below what the user owes and holds (set it to exactly
    /// that, "0.00 EUR" when nothing is owed, to stop new trustee payments).
    limit: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct TrusteeCreditArgs {
    /// The user.
    user: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct SettleArgs {
    /// Settle payments made before this time (RFC 3339). Default: now.
    #[arg(long, value_name = "RFC3339")]
    until: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

// ----- entry points ------------------------------------------------------------------------

/// `tally subscriber …`: the directory of users, their addresses and certificates.
pub async fn subscriber(cmd: SubscriberCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SubscriberCommand::Add(a) => directory::add(a).await,
        SubscriberCommand::Address(AddressCommand::Add(a)) => directory::address_add(a).await,
        SubscriberCommand::Address(AddressCommand::List(a)) => directory::addresses(a).await,
        SubscriberCommand::Certificate(a) => directory::certificate(a).await,
    }
}

/// `tally auth …`: opens a session for an application, or confirms, shows, cancels or lists
/// sessions.
pub async fn auth(cmd: AuthCommand) -> anyhow::Result<ExitCode> {
    use sessions::open;
    use tally_client::wire::oob::AppRequest;
    match cmd {
        AuthCommand::Login(a) => open(&a.conn, &a.user, AppRequest::Login, &a.open).await,
        AuthCommand::Transfer(a) => open(&a.conn, &a.user, sessions::transfer(&a)?, &a.open).await,
        AuthCommand::Bet(a) => open(&a.conn, &a.user, sessions::bet(&a)?, &a.open).await,
        AuthCommand::Pay(a) => open(&a.conn, &a.user, sessions::payment(&a)?, &a.open).await,
        AuthCommand::Trustee(a) => open(&a.conn, &a.user, sessions::trustee(&a)?, &a.open).await,
        AuthCommand::Declare(a) => {
            open(&a.conn, &a.user, sessions::declaration(&a)?, &a.open).await
        }
        AuthCommand::Offers(a) => open(&a.conn, &a.user, AppRequest::Offers, &a.open).await,
        AuthCommand::Confirm(a) => sessions::confirm(a).await,
        AuthCommand::Show(a) => sessions::show(a).await,
        AuthCommand::Cancel(a) => sessions::cancel(a).await,
        AuthCommand::Sessions(a) => sessions::list(a).await,
    }
}

/// `tally mail …`: registered mail is sent and retrieved through sessions; the list is read
/// directly.
pub async fn mail(cmd: MailCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MailCommand::Send(a) => {
            sessions::open(&a.conn, &a.from, sessions::mail_send(&a)?, &a.open).await
        }
        MailCommand::Retrieve(a) => {
            sessions::open(&a.conn, &a.user, sessions::mail_retrieve(&a)?, &a.open).await
        }
        MailCommand::List(a) => records::mail_list(a).await,
    }
}

/// `tally offer …`: a merchant's offer left in a user's mailbox.
pub async fn offer(cmd: OfferCommand) -> anyhow::Result<ExitCode> {
    let OfferCommand::Send(a) = cmd;
    records::offer_send(a).await
}

/// `tally statement USER`: the user's register lines and totals for a period.
pub async fn statement(a: StatementArgs) -> anyhow::Result<ExitCode> {
    records::statement(a).await
}

/// `tally certificates USER`: the node-signed records of what the user's sessions certified.
pub async fn certificates(a: UserArgs) -> anyhow::Result<ExitCode> {
    records::certificates(a).await
}

/// `tally rule …`: a payee's threshold for out-of-band confirmation.
pub async fn rule(cmd: RuleCommand) -> anyhow::Result<ExitCode> {
    let RuleCommand::Set(a) = cmd;
    directory::rule_set(a).await
}

/// `tally trustee …`: the end of a trustee period.
pub async fn trustee(cmd: TrusteeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TrusteeCommand::Settle(a) => records::settle(a).await,
        TrusteeCommand::Limit(a) => records::trustee_limit(a).await,
        TrusteeCommand::Credit(a) => records::trustee_credit(a).await,
    }
}
