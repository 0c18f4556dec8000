//! `tally buy` and `tally package download`: a sale is made (or looked up) and its locked
//! package saved next to the user, named after the sale's reference code unless `--out` says
//! otherwise.

use anyhow::anyhow;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tally_client::wire::delivery::{NewSale, SaleView};
use tally_kernel::Id;
use tally_proto::delivery::ReferenceCode;

use super::common::{id_arg, when};
use super::download::download_package;
use super::{BuyArgs, DownloadArgs};
use crate::client::{Client, answered, idempotency_key};

/// What `tally buy --json` prints.
#[derive(Serialize)]
struct Bought<'a> {
    sale: &'a SaleView,
    file: &'a Path,
    bytes: u64,
}

/// What `tally package download --json` prints.
#[derive(Serialize)]
struct Downloaded<'a> {
    sale: Id,
    file: &'a Path,
    bytes: u64,
}

/// `tally buy PRODUCT`: buys it, then downloads the package.
pub async fn buy(a: BuyArgs) -> anyhow::Result<ExitCode> {
    let product = id_arg("product", &a.product)?;
    let c = Client::new(&a.conn)?;
    let request = NewSale {
        product,
        channel: a.channel.clone(),
        address: a.address.clone(),
        name: a.name.clone(),
    };
    let key = idempotency_key(&a.idempotency_key);
    let sale = answered(c.api.sale_buy(&key, &request).await?);
    let reference = sale_reference(&sale)?;
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}.tallypkg", reference.display())));
    let len = download_package(&c, &sale, &out).await?;
    if c.json {
        c.show(
            &Bought {
                sale: &sale,
                file: &out,
                bytes: len,
            },
            |_| String::new(),
        );
    } else {
        println!("{}", sale_summary(&sale));
        println!("file      {} ({len} bytes)", out.display());
        println!(
            "next      check it with `tally package inspect {}`, pay with `tally pay --reference {} \
             --from ACCOUNT`, then `tally package unlock {} --fetch`",
            out.display(),
            reference,
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tally package download SALE`: the package of a sale made earlier.
pub(super) async fn download(a: DownloadArgs) -> anyhow::Result<ExitCode> {
    let sale_id = id_arg("sale", &a.sale)?;
    let c = Client::new(&a.conn)?;
    let sale = c.api.sale(sale_id).await?;
    let out = match a.out {
        Some(o) => o,
        None => PathBuf::from(format!("{}.tallypkg", sale_reference(&sale)?.display())),
    };
    let len = download_package(&c, &sale, &out).await?;
    if c.json {
        c.show(
            &Downloaded {
                sale: sale_id,
                file: &out,
                bytes: len,
            },
            |_| String::new(),
        );
    } else {
        println!("file      {} ({len} bytes)", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The sale's reference code, checked.
fn sale_reference(sale: &SaleView) -> anyhow::Result<ReferenceCode> {
    ReferenceCode::parse(&sale.reference).map_err(|e| {
        anyhow!(
            "the node's sale {} has no valid reference code ({e}): {:?}",
            sale.id,
            sale.reference
        )
    })
}

/// A sale, one `label value` per line; the times of what happened to it so far.
fn sale_summary(s: &SaleView) -> String {
    let mut out = format!(
        "sale      {}\nproduct   {} ({})\nreference {}\nprice     {}\nstate     {}",
        s.id, s.product, s.title, s.reference, s.price, s.state,
    );
    for (label, t) in [
        ("delivered", s.delivered_at),
        ("paid     ", s.paid_at),
        ("released ", s.released_at),
    ] {
        if t.is_some() {
            out.push_str(&format!("\n{label} {}", when(t)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_kernel::Timestamp;
    use tally_proto::delivery::sale::SaleState;

    #[test]
    fn a_sale_shows_only_what_happened() {
        let sale = SaleView {
            id: Id::new(),
            product: Id::new(),
            title: "Night Songs".into(),
            buyer: "alice".into(),
            name: "Alice".into(),
            channel: "dev".into(),
            address: "alice-inbox".into(),
            reference: "not a code".into(),
            price: "9.90 EUR".parse().expect("amount"),
            state: SaleState::Open,
            package_len: 10,
            package_sha256: "00".repeat(32),
            download: String::new(),
            created_at: Timestamp(0),
            delivered_at: Some(Timestamp(0)),
            paid_at: None,
            released_at: None,
            overdue_at: None,
            payments: Vec::new(),
        };
        let text = sale_summary(&sale);
        assert!(text.ends_with(&format!("state     open\ndelivered {}", Timestamp(0))));
        assert!(text.contains("price     9.90 EUR"), "{text}");
        assert!(sale_reference(&sale).is_err());
    }
}
