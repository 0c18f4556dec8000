//! Money around a sale: `tally pay` (a ledger payment quoting the reference code), `tally
//! payment refund`, `tally receiver set` (where a bank's signed notifications land) and
//! `tally complaint`.
//!
//! Reference codes carry a check character and are parsed here first: a typo never reaches
//! the node.

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use std::process::ExitCode;
use tally_client::wire::delivery::{
    Complaint, PayReference, PaymentView, ReceiverConfig, SaleView,
};
use tally_kernel::crypto::VerifyingKey;
use tally_kernel::{Amount, Id, Secret};
use tally_proto::delivery::ReferenceCode;
use tally_proto::delivery::sale::PaymentStatus;

use super::common::{amount_arg, hex, id_arg};
use super::{ComplaintCommand, PayArgs, PaymentCommand, ReceiverCommand, ReceiverSetArgs};
use crate::client::{Client, answered, idempotency_key};
use crate::oob::confirming;

/// What `tally pay --json` prints: the payment, and its sale when the payer may see it.
#[derive(Serialize)]
struct Paid<'a> {
    payment: &'a PaymentView,
    sale: Option<&'a SaleView>,
}

/// `tally pay --reference CODE --from ACCOUNT [--amount AMOUNT]`: exits non-zero unless the
/// payment matched its sale (a wrong amount is kept, refundable, and releases nothing).
pub async fn pay(a: PayArgs) -> anyhow::Result<ExitCode> {
    // The code is checked here first: a typo never reaches the node.
    let reference = match ReferenceCode::parse(&a.reference) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let from = id_arg("--from", &a.from)?;
    let given = match &a.amount {
        Some(t) => Some(amount_arg("--amount", t)?),
        None => None,
    };
    let c = Client::new(&a.conn)?;
    let amount = match given {
        Some(amount) => amount,
        None => sale_price(&c, &reference).await?,
    };
    let request = PayReference {
        reference: reference.display(),
        from_account: from,
        amount,
    };
    let key = idempotency_key(&a.idempotency_key);
    let payment = answered(
        confirming(&c, &format!("with --idempotency-key {key}"), || {
            c.api.sale_pay(&key, &request)
        })
        .await?,
    );
    // The sale after the payment, when the payer may see it.
    let sale = match payment.sale {
        Some(id) => c.api.sale(id).await.ok(),
        None => None,
    };
    if c.json {
        let shown = Paid {
            payment: &payment,
            sale: sale.as_ref(),
        };
        c.show(&shown, |_| String::new());
    } else {
        println!("{}", payment_summary(&payment));
        if let Some(sale) = &sale {
            println!("sale      {} {}", sale.id, sale.state);
        }
    }
    Ok(if payment.status == PaymentStatus::Matched {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The price of the sale with `reference`: what `pay` sends when no `--amount` is given.
async fn sale_price(c: &Client, reference: &ReferenceCode) -> anyhow::Result<Amount> {
    let sale = c
        .api
        .sale_by_reference(&reference.display())
        .await
        .with_context(|| {
            format!("looking up the price of {reference} (give --amount to pay without it)")
        })?;
    amount_arg("the sale's price", &sale.price.to_string())
}

/// `tally payment refund PAYMENT`.
pub async fn payment(cmd: PaymentCommand) -> anyhow::Result<ExitCode> {
    let PaymentCommand::Refund(a) = cmd;
    let id = id_arg("payment", &a.payment)?;
    if a.idempotency_key.is_some() {
        eprintln!("note: --idempotency-key is not needed: the node refunds a payment once");
    }
    let c = Client::new(&a.conn)?;
    let refunded = c.api.refund(id).await?;
    c.show(&refunded, payment_summary);
    Ok(ExitCode::SUCCESS)
}

/// `tally receiver set NAME`.
pub async fn receiver(cmd: ReceiverCommand) -> anyhow::Result<ExitCode> {
    let ReceiverCommand::Set(a) = cmd;
    let account = id_arg("--account", &a.account)?;
    if a.name.is_empty() || a.name.len() > 64 || a.name.contains('/') {
        bail!("receiver name {:?}: 1 to 64 characters, no `/`", a.name);
    }
    let (scheme, config) = receiver_config(&a, account)?;
    let c = Client::new(&a.conn)?;
    let receiver = c.api.receiver_set(&a.name, &config).await?;
    let url = if receiver.endpoint.starts_with('/') {
        format!("{}{}", c.base(), receiver.endpoint)
    } else {
        receiver.endpoint.clone()
    };
    c.show(&receiver, |r| {
        format!(
            "receiver  {}\naccount   {}\nsigned    {scheme}\nposts to  {url}",
            r.name, r.account
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// The receiver's configuration, and the name of its signature scheme.
fn receiver_config(
    a: &ReceiverSetArgs,
    account: Id,
) -> anyhow::Result<(&'static str, ReceiverConfig)> {
    let mut config = ReceiverConfig {
        account,
        hmac_secret: None,
        ed25519_public: None,
    };
    let scheme = match (&a.key.hmac_secret_file, &a.key.ed25519_public) {
        (Some(f), _) => {
            let mut bytes =
                std::fs::read(f).with_context(|| format!("--hmac-secret-file {}", f.display()))?;
            if bytes.ends_with(b"\n") {
                bytes.pop();
                if bytes.ends_with(b"\r") {
                    bytes.pop();
                }
            }
            let secret = Secret::new(bytes);
            if secret.expose().is_empty() {
                bail!("--hmac-secret-file {}: the secret is empty", f.display());
            }
            config.hmac_secret = Some(hex(secret.expose()));
            "hmac-sha256"
        }
        (None, Some(k)) => {
            let key =
                VerifyingKey::from_hex(k.trim()).map_err(|e| anyhow!("--ed25519-public: {e}"))?;
            config.ed25519_public = Some(key.to_hex());
            "ed25519"
        }
        (None, None) => bail!("give --hmac-secret-file or --ed25519-public"),
    };
    Ok((scheme, config))
}

/// `tally complaint key-lost|package-broken|product-deleted --reference CODE`.
pub async fn complaint(cmd: ComplaintCommand) -> anyhow::Result<ExitCode> {
    let (kind, a) = match cmd {
        ComplaintCommand::KeyLost(a) => ("key_lost", a),
        ComplaintCommand::PackageBroken(a) => ("package_broken", a),
        ComplaintCommand::ProductDeleted(a) => ("product_deleted", a),
        ComplaintCommand::Refund(a) => ("refund", a),
        ComplaintCommand::CheckCopy(a) => ("check_copy", a),
    };
    let reference = match ReferenceCode::parse(&a.reference) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if a.idempotency_key.is_some() {
        eprintln!(
            "note: --idempotency-key is not needed: a repeated complaint only repeats its message"
        );
    }
    let c = Client::new(&a.conn)?;
    // The copy's digest is the SHA-256 of its signed header, as the package's trailer holds it.
    let package_sha256 = match (&a.file, kind) {
        (Some(file), "check_copy") => Some(copy_digest(file)?),
        (None, "check_copy") => bail!("check-copy needs --file with your copy of the package"),
        _ => None,
    };
    let request = Complaint {
        reference: reference.display(),
        kind: kind.to_string(),
        reason: a.reason.clone(),
        package_sha256,
    };
    let outcome = c.api.complaint(&request).await?;
    c.show(&outcome, |o| {
        format!(
            "sale      {}\ncomplaint {}\naction    {}",
            o.sale, o.kind, o.action
        )
    });
    Ok(if outcome.matches == Some(false) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The digest a package's trailer holds (SHA-256 of its signed header), read from the file's
/// last bytes: `TALLYSIG ‖ digest[32] ‖ signature[64]`.
fn copy_digest(file: &std::path::Path) -> anyhow::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
    let len = f.metadata()?.len();
    if len < 104 {
        bail!("{} is too short to be a package", file.display());
    }
    f.seek(SeekFrom::End(-104))?;
    let mut trailer = [0_u8; 104];
    f.read_exact(&mut trailer)?;
    if &trailer[..8] != b"TALLYSIG" {
        bail!("{} does not end with a package trailer", file.display());
    }
    Ok(hex::encode(&trailer[8..40]))
}

/// A payment, with what its status means for the payer and how to undo it.
fn payment_summary(p: &PaymentView) -> String {
    let refund = format!("`tally payment refund {}`", p.id);
    let meaning = match p.status {
        PaymentStatus::Matched => "the sale is paid; its key is released".to_string(),
        PaymentStatus::Mismatch => format!(
            "wrong amount or currency: nothing released; the payment is kept, refundable with \
             {refund}"
        ),
        PaymentStatus::Duplicate => {
            format!("the sale was already paid: nothing released; refundable with {refund}")
        }
        PaymentStatus::Unmatched => format!("no sale has this reference; refundable with {refund}"),
        PaymentStatus::Closed => {
            format!("the sale expired or was cancelled: nothing released; refundable with {refund}")
        }
        PaymentStatus::Refunded => "the money went back".to_string(),
    };
    let reference =
        ReferenceCode::parse(&p.reference).map_or_else(|_| p.reference.clone(), |r| r.display());
    format!(
        "payment   {}\nstatus    {} ({meaning})\namount    {}\nreference {}\npath      {}\ntransfer  {}",
        p.id, p.status, p.amount, reference, p.path, p.transfer,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_kernel::Timestamp;
    use tally_proto::delivery::sale::PaymentPath;

    #[test]
    fn a_mismatch_says_how_to_get_the_money_back() {
        let p = PaymentView {
            id: Id::new(),
            sale: None,
            reference: "not a code".into(),
            path: PaymentPath::Ledger,
            amount: "1.00 EUR".parse().expect("amount"),
            status: PaymentStatus::Mismatch,
            transfer: Id::new(),
            payer: "alice".into(),
            created_at: Timestamp(0),
            replayed: false,
        };
        let text = payment_summary(&p);
        assert!(text.starts_with(&format!("payment   {}\nstatus    mismatch (wrong", p.id)));
        assert!(
            text.contains(&format!("`tally payment refund {}`", p.id)),
            "{text}"
        );
        assert!(
            text.contains("\nreference not a code\npath      ledger\n"),
            "{text}"
        );
    }
}
