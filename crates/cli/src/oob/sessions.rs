//! Sessions: opened for an application (the request built from the flags as an
//! [`AppRequest`]), confirmed with the code from channel B, shown, cancelled and listed.
//!
//! Key decisions: opening always carries an idempotency key, so a re-run returns the first
//! session (and its code) instead of sending a second one. Confirming shows the session first
//! and sends the transaction the user saw back with the code; a refusal of the code is told
//! apart by the node's stable [`ErrorCode`], never by its message, and explained in words.

use super::args::{account_arg, amount_arg, read_text, session_arg};
use super::print::{opened_summary, result_text, rows, session_line, session_summary};
use super::{
    AuthTransferArgs, BetArgs, ConfirmArgs, DeclareArgs, MailRetrieveArgs, MailSendArgs, OpenOpts,
    PayArgs, SessionArgs, TrusteeArgs, UserArgs,
};
use crate::client::{Client, Conn, answered, idempotency_key};
use anyhow::{Context, bail};
use std::process::ExitCode;
use tally_client::Answer;
use tally_client::wire::error::ErrorCode;
use tally_client::wire::oob::{AppRequest, OpenSession, Opened, SessionView, VerifyRequest};
use tally_kernel::{Id, Secret};
use tally_proto::oob::{Purpose, State};
use zeroize::Zeroize;

// ----- opening -------------------------------------------------------------------------------

/// Opens a session for `user`; prints the session to confirm, or the transfer made at once
/// (at or below the payee's threshold).
pub(super) async fn open(
    conn: &Conn,
    user: &str,
    app: AppRequest,
    opts: &OpenOpts,
) -> anyhow::Result<ExitCode> {
    let c = Client::new(conn)?;
    let certificate = opts
        .certificate
        .as_deref()
        .map(|path| read_text("--certificate", path))
        .transpose()?;
    let req = OpenSession {
        user: user.to_string(),
        app,
        channel: opts.channel.clone(),
        certificate,
    };
    let key = idempotency_key(&opts.idempotency_key);
    let opened = c.api.session_open(Some(&key), &req).await?;
    // The node says in the answer whether the key was used before.
    let replayed = match &opened {
        Opened::Secured { replayed, .. } | Opened::Normal { replayed, .. } => *replayed,
    };
    let opened = answered(Answer {
        value: opened,
        replayed,
    });
    c.show(&opened, opened_summary);
    Ok(ExitCode::SUCCESS)
}

/// `tally auth transfer`.
pub(super) fn transfer(a: &AuthTransferArgs) -> anyhow::Result<AppRequest> {
    Ok(AppRequest::Transfer {
        debit_account: account_arg("--from", &a.from)?,
        credit_account: account_arg("--to", &a.to)?,
        amount: amount_arg("--amount", &a.amount)?,
        memo: a.memo.clone(),
    })
}

/// `tally auth bet`.
pub(super) fn bet(a: &BetArgs) -> anyhow::Result<AppRequest> {
    Ok(AppRequest::Bet {
        debit_account: account_arg("--from", &a.from)?,
        credit_account: account_arg("--to", &a.to)?,
        stake: amount_arg("--stake", &a.stake)?,
        bet: a.bet.clone(),
    })
}

/// `tally auth pay`: without `--payer-account`, the user's stored account pays.
pub(super) fn payment(a: &PayArgs) -> anyhow::Result<AppRequest> {
    let payer_account = a
        .payer_account
        .as_deref()
        .map(|t| account_arg("--payer-account", t))
        .transpose()?;
    Ok(AppRequest::Payment {
        payer_account,
        merchant_account: account_arg("--merchant-account", &a.merchant_account)?,
        amount: amount_arg("--amount", &a.amount)?,
        description: a.description.clone(),
        terminal: a.terminal.clone(),
    })
}

/// `tally auth trustee`.
pub(super) fn trustee(a: &TrusteeArgs) -> anyhow::Result<AppRequest> {
    Ok(AppRequest::Trustee {
        merchant_account: account_arg("--merchant-account", &a.merchant_account)?,
        amount: amount_arg("--amount", &a.amount)?,
        description: a.description.clone(),
    })
}

/// `tally auth declare`: the form is read from its file.
pub(super) fn declaration(a: &DeclareArgs) -> anyhow::Result<AppRequest> {
    Ok(AppRequest::Declaration {
        title: a.title.clone(),
        form: read_text("--form-file", &a.form_file)?,
    })
}

/// `tally mail send`: the body is read from its file.
pub(super) fn mail_send(a: &MailSendArgs) -> anyhow::Result<AppRequest> {
    Ok(AppRequest::MailSend {
        recipient: a.to.clone(),
        subject: a.subject.clone(),
        body: read_text("--body-file", &a.body_file)?,
    })
}

/// `tally mail retrieve`.
pub(super) fn mail_retrieve(a: &MailRetrieveArgs) -> anyhow::Result<AppRequest> {
    let id = uuid::Uuid::parse_str(&a.mail_id)
        .with_context(|| format!("MAIL_ID {:?}: expected a mail id (a UUID)", a.mail_id))?;
    Ok(AppRequest::MailRetrieve { mail_id: Id(id) })
}

// ----- confirming ----------------------------------------------------------------------------

/// What the user can do about a refused code; `None` for refusals that are not about the
/// code (they are reported as errors).
fn refusal_hint(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::WrongCode => {
            "nothing was executed; type the code again (check the latest message)"
        }
        ErrorCode::Expired => "nothing was executed; open a new session for a new code",
        ErrorCode::TooManyAttempts => {
            "the session is locked and nothing was executed; open a new session"
        }
        ErrorCode::SessionClosed => {
            "the session is already verified or cancelled; nothing more was executed"
        }
        ErrorCode::TransactionMismatch => {
            "the transaction shown here is not the one the code was sent for; nothing was executed"
        }
        _ => return None,
    })
}

/// `tally auth confirm`: shows the session, takes the code, verifies it; exits 1 when the
/// node refuses the code.
pub(super) async fn confirm(a: ConfirmArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let number = session_arg(&a.session)?;
    let view = c.api.session(&number).await?;
    // What is being authorised, in clear, before the code is asked for (on stderr with --json
    // so stdout stays one JSON document).
    let shown = session_summary(&view);
    if c.json {
        eprintln!("{shown}");
    } else {
        println!("{shown}");
    }
    if view.state != State::Open && a.code.is_none() {
        eprintln!(
            "not authorized: session_closed: the session is {}; nothing to confirm",
            view.state.as_str()
        );
        return Ok(ExitCode::FAILURE);
    }
    let code = match a.code {
        Some(code) => Secret::new(code),
        None => read_code(&view.channel, &view.address).await?,
    };
    let mut req = verify_request(&view, &code)?;
    let answer = c.api.session_verify(&number, &req).await;
    req.code.zeroize();
    let verified = match answer {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    c.show(&verified, |v| {
        let text = result_text(&v.session, v.access_token.as_deref());
        if text.is_empty() {
            "authorized".to_string()
        } else {
            format!("authorized\n{text}")
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// The code, with the transaction the user was shown: the node refuses the code if it was
/// sent for another one (integrity, A3).
fn verify_request(view: &SessionView, code: &Secret<String>) -> anyhow::Result<VerifyRequest> {
    let code = code.expose().trim();
    if code.is_empty() {
        bail!("no code given");
    }
    let confirm = match &view.purpose {
        Purpose::Transaction(t) => Some(t.clone()),
        Purpose::Login | Purpose::Message(_) => None,
    };
    Ok(VerifyRequest {
        code: code.to_string(),
        confirm,
    })
}

/// A refused verification: explained with exit status 1 when it is about the code (nothing
/// was executed), else the error itself.
fn refused(e: tally_client::Error) -> anyhow::Result<ExitCode> {
    if let Some(r) = e.refusal()
        && let Some(hint) = r.code.and_then(refusal_hint)
    {
        eprintln!("not authorized: {}: {}\n{hint}", r.code_text, r.message);
        return Ok(ExitCode::FAILURE);
    }
    Err(e.into())
}

/// Runs a request that moves the caller's money (`call`, which repeats it with the same
/// idempotency key; `again` says how to repeat the command, e.g. `with --idempotency-key K`).
/// When the node answers that it needs out-of-band confirmation, shows
/// what is being paid, asks for the code on the terminal (or reads a line of stdin), verifies it
/// and repeats the request once. Without a code, says how to finish and fails.
pub(crate) async fn confirming<T, F, Fut>(c: &Client, again: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tally_client::Error>>,
{
    let first = call().await;
    let session = match first {
        Err(tally_client::Error::ConfirmationRequired(session)) => session,
        other => return Ok(other?),
    };
    eprintln!(
        "confirmation required: nothing was done yet\n{}",
        session_summary(&session)
    );
    let code = read_code(&session.channel, &session.address).await?;
    if code.expose().trim().is_empty() {
        bail!(
            "not confirmed: no code given; confirm with `tally auth confirm {}`, then repeat \
             this command {again}",
            session.session
        );
    }
    let mut req = verify_request(&session, &code)?;
    let verified = c.api.session_verify(&session.session, &req).await;
    req.code.zeroize();
    if let Err(e) = verified {
        if let Some(r) = e.refusal()
            && let Some(hint) = r.code.and_then(refusal_hint)
        {
            bail!("not confirmed: {}: {}\n{hint}", r.code_text, r.message);
        }
        return Err(e.into());
    }
    Ok(call().await?)
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

// ----- reading and cancelling ----------------------------------------------------------------

/// `tally auth show`: the session, and what it produced once verified.
pub(super) async fn show(a: SessionArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let number = session_arg(&a.session)?;
    let view = c.api.session(&number).await?;
    c.show(&view, |v| {
        let mut out = session_summary(v);
        if v.result.is_some() {
            out.push('\n');
            out.push_str(&result_text(v, None));
        }
        out
    });
    Ok(ExitCode::SUCCESS)
}

/// `tally auth cancel`: a payment's hold is released.
pub(super) async fn cancel(a: SessionArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let number = session_arg(&a.session)?;
    let view = c.api.session_cancel(&number).await?;
    c.show(&view, |v| {
        let released = if v.hold_id.is_some() {
            "; the hold is released"
        } else {
            ""
        };
        format!("{}\ncancelled{released}", session_summary(v))
    });
    Ok(ExitCode::SUCCESS)
}

/// `tally auth sessions`: newest first.
pub(super) async fn list(a: UserArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.conn)?;
    let sessions = c.api.sessions(&a.user).await?;
    c.show(&sessions, |v| rows(v, "(no sessions)", session_line));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(purpose: serde_json::Value) -> SessionView {
        serde_json::from_value(json!({
            "session": "0123456789abcdef0123456789abcdef", "user": "alice",
            "application": "transfer", "state": "open", "purpose": purpose,
            "attempts_left": 3, "expires_at": 0, "channel": "dev", "address": "a***e",
            "delivery": "sent", "delivery_error": null, "hold_id": null, "result": null}))
        .expect("session")
    }

    #[test]
    fn the_transaction_shown_goes_back_with_the_code() {
        let view = session(json!({"type": "transaction",
            "amount": {"minor": 1250, "currency": "EUR"},
            "payer_account": "0190f6b2-7c1e-7000-8000-00000000000a", "payee": "bob",
            "payee_account": null, "description": "rent"}));
        let req = verify_request(&view, &Secret::new(" 123456\n".to_string())).expect("req");
        assert_eq!(req.code, "123456");
        let Purpose::Transaction(shown) = &view.purpose else {
            panic!("a transaction")
        };
        assert_eq!(req.confirm.as_ref(), Some(shown));
        let login = session(json!({"type": "login"}));
        let req = verify_request(&login, &Secret::new("1".to_string())).expect("req");
        assert!(req.confirm.is_none());
        assert!(verify_request(&login, &Secret::new("  \n".to_string())).is_err());
    }

    #[test]
    fn only_refusals_of_the_code_are_explained() {
        for code in [
            ErrorCode::WrongCode,
            ErrorCode::Expired,
            ErrorCode::TooManyAttempts,
            ErrorCode::SessionClosed,
            ErrorCode::TransactionMismatch,
        ] {
            assert!(refusal_hint(code).is_some(), "{code:?}");
        }
        assert!(refusal_hint(ErrorCode::NotFound).is_none());
        assert!(refusal_hint(ErrorCode::Unauthorized).is_none());
    }

    #[test]
    fn requests_are_built_from_the_flags() {
        #[derive(clap::Parser)]
        struct Line {
            #[command(flatten)]
            a: AuthTransferArgs,
        }
        let Line { a } = clap::Parser::try_parse_from([
            "transfer",
            "--user",
            "alice",
            "--from",
            "0190f6b2-7c1e-7000-8000-00000000000a",
            "--to",
            "0190f6b2-7c1e-7000-8000-00000000000b",
            "--amount",
            "12.5 EUR",
            "--memo",
            "rent",
        ])
        .expect("flags");
        let req = OpenSession {
            user: a.user.clone(),
            app: transfer(&a).expect("app"),
            channel: None,
            certificate: None,
        };
        let sent = serde_json::to_value(&req).expect("json");
        assert_eq!(sent["application"], "transfer");
        assert_eq!(sent["amount"], "12.50 EUR");
        let back: OpenSession = serde_json::from_value(sent).expect("the node parses it");
        assert_eq!(back.app, req.app);
        let login = OpenSession {
            app: AppRequest::Login,
            ..req
        };
        let sent = serde_json::to_value(&login).expect("json");
        assert!(serde_json::from_value::<OpenSession>(sent).is_ok());
    }
}
