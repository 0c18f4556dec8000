//! `tally product …`: add a product (create the draft, upload each file streamed from disk,
//! publish it), list, show and withdraw products.
//!
//! An upload is hashed as it is read, so the node's `plain_len` and `plain_sha256` are checked
//! against the file without a second pass over it; a re-run with the same idempotency key
//! skips the files the draft already holds byte for byte.

use anyhow::{Context, anyhow, bail};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tally_client::wire::delivery::{EntryView, NewProduct, ProductView};
use tally_kernel::Id;
use tally_kernel::crypto::kdf::Sha256Stream;
use tally_proto::delivery::sale::ProductState;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use super::common::{amount_arg, bytes_bar, hex, id_arg, read_text};
use super::{CHUNK_LEN, ProductAddArgs, ProductCommand};
use crate::client::{Client, answered, idempotency_key};

/// A file to upload, checked before the first request.
struct Upload {
    path: PathBuf,
    name: String,
    kind: &'static str,
    len: u64,
}

/// `tally product add|list|show|withdraw`.
pub async fn product(cmd: ProductCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ProductCommand::Add(a) => return product_add(a).await,
        ProductCommand::List(a) => {
            let c = Client::new(&a.conn)?;
            let products = c.api.products().await?;
            c.show(&products, |rows| product_list(rows));
        }
        ProductCommand::Show(a) => {
            let c = Client::new(&a.conn)?;
            let id = id_arg("product", &a.id)?;
            let product = c.api.product(id).await?;
            c.show(&product, product_summary);
        }
        ProductCommand::Withdraw(a) => {
            let c = Client::new(&a.conn)?;
            let id = id_arg("product", &a.id)?;
            let product = c.api.product_withdraw(id).await?;
            c.show(&product, |p| {
                format!(
                    "{}\nwithdrawn: no new sales; packages already sold stay downloadable",
                    product_summary(p)
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tally product add`: the draft (or, with the same key, the first one), its files, then
/// published.
async fn product_add(a: ProductAddArgs) -> anyhow::Result<ExitCode> {
    // Stage two: everything checked before the first request.
    let (request, uploads) = add_plan(&a)?;
    let c = Client::new(&a.conn)?;
    let key = idempotency_key(&a.idempotency_key);
    let mut product = answered(c.api.product_create(&key, &request).await?);
    if !c.json {
        println!("draft     {}", product.id);
    }
    for u in &uploads {
        if already_uploaded(&product, u).await? {
            eprintln!("{}: already uploaded", u.name);
            continue;
        }
        let entry = upload_entry(&c, product.id, u).await?;
        if !c.json {
            println!("uploaded  {}", entry_line(&entry));
        }
    }
    if product.state != ProductState::Active {
        product = c.api.product_publish(product.id).await?;
    }
    c.show(&product, product_summary);
    Ok(ExitCode::SUCCESS)
}

/// The product to create and the files to upload, from `product add`'s arguments.
fn add_plan(a: &ProductAddArgs) -> anyhow::Result<(NewProduct, Vec<Upload>)> {
    let price = amount_arg("--price", &a.price)?;
    let pay_to = id_arg("--pay-to", &a.pay_to)?;
    let mut uploads = vec![upload_arg("--file", &a.file, "product")?];
    for d in &a.docs {
        uploads.push(upload_arg("--doc", d, "document")?);
    }
    for (i, u) in uploads.iter().enumerate() {
        if uploads[..i].iter().any(|o| o.name == u.name) {
            bail!("two files are named {:?}: entry names must differ", u.name);
        }
    }
    let licence = match (&a.licence.licence, &a.licence.licence_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => read_text("--licence-file", f)?,
        (None, None) => bail!("give --licence TEXT or --licence-file FILE"),
    };
    if licence.trim().is_empty() {
        bail!("the licence is empty");
    }
    let registration_template = match &a.registration_template_file {
        Some(f) => Some(read_text("--registration-template-file", f)?),
        None => None,
    };
    let request = NewProduct {
        title: a.title.clone(),
        price,
        pay_to,
        producer: a.producer.clone(),
        licence,
        instructions: a.instructions.clone().unwrap_or_default(),
        registration_template,
    };
    Ok((request, uploads))
}

/// A file given with `flag`, readable, with a name usable as an entry name.
fn upload_arg(flag: &str, path: &Path, kind: &'static str) -> anyhow::Result<Upload> {
    let meta = std::fs::metadata(path).with_context(|| format!("{flag} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{flag} {}: not a file", path.display());
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{flag} {}: the file name is not UTF-8", path.display()))?;
    // The package header's rule for entry names (tally_proto::delivery).
    if name.len() > 200 || name.contains(['/', '\\', '\0']) {
        bail!(
            "{flag} {}: the file name must be a plain name of at most 200 bytes",
            path.display()
        );
    }
    Ok(Upload {
        path: path.to_path_buf(),
        name: name.to_string(),
        kind,
        len: meta.len(),
    })
}

/// Whether `product` (as the node has it) already holds `u` byte for byte: a re-run of an
/// interrupted `product add` with the same key skips those files.
async fn already_uploaded(product: &ProductView, u: &Upload) -> anyhow::Result<bool> {
    let Some(e) = product.entries.iter().find(|e| e.name == u.name) else {
        return Ok(false);
    };
    if u64::try_from(e.plain_len).ok() != Some(u.len) || e.kind != u.kind {
        return Ok(false);
    }
    let digest = file_sha256(u.path.clone()).await?;
    Ok(e.plain_sha256.eq_ignore_ascii_case(&hex(&digest)))
}

/// SHA-256 of a file, read in [`CHUNK_LEN`] pieces off the async threads.
async fn file_sha256(path: PathBuf) -> anyhow::Result<[u8; 32]> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<[u8; 32]> {
        let mut f =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut hash = Sha256Stream::new();
        let mut buf = vec![0_u8; CHUNK_LEN];
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                return Ok(hash.finish());
            }
            hash.update(&buf[..n]);
        }
    })
    .await?
}

/// Uploads one file, streamed from disk (constant memory for any size) and hashed on the way;
/// the node's `plain_len` and `plain_sha256` must match.
async fn upload_entry(c: &Client, product: Id, u: &Upload) -> anyhow::Result<EntryView> {
    let file = tokio::fs::File::open(&u.path)
        .await
        .with_context(|| format!("opening {}", u.path.display()))?;
    let bar = bytes_bar(u.len, format!("uploading {}", u.name));
    let (body, digest_rx) = hashing_body(file, u.len, bar.clone());
    let sent = c
        .api
        .entry_upload(product, &u.name, u.kind, u.len, body)
        .await;
    bar.finish_and_clear();
    let entry = sent.with_context(|| format!("uploading {}", u.path.display()))?;
    let digest = digest_rx.await.map_err(|_| {
        anyhow!(
            "{}: the file changed size during the upload",
            u.path.display()
        )
    })?;
    if u64::try_from(entry.plain_len).ok() != Some(u.len)
        || !entry.plain_sha256.eq_ignore_ascii_case(&hex(&digest))
    {
        bail!(
            "{}: the node stored {} bytes with SHA-256 {}, but the file has {} bytes with SHA-256 {} \
             (did the file change during the upload?)",
            u.name,
            entry.plain_len,
            entry.plain_sha256,
            u.len,
            hex(&digest)
        );
    }
    Ok(entry)
}

/// The request body of an upload: `file` in [`CHUNK_LEN`] pieces, moving `bar`; the receiver
/// gets the SHA-256 of its `len` bytes once the last of them is read (the connection takes
/// exactly Content-Length bytes and may not poll the stream again for its end). It gets
/// nothing if the file ends early.
fn hashing_body(
    file: tokio::fs::File,
    len: u64,
    bar: indicatif::ProgressBar,
) -> (tally_client::Body, oneshot::Receiver<[u8; 32]>) {
    let (digest_tx, digest_rx) = oneshot::channel::<[u8; 32]>();
    let hash = if len == 0 {
        let _ = digest_tx.send(Sha256Stream::new().finish());
        None
    } else {
        Some((Sha256Stream::new(), digest_tx))
    };
    let state = (file, bar, hash, 0_u64);
    let stream =
        futures::stream::try_unfold(state, move |(mut file, bar, mut hash, read)| async move {
            let mut buf = vec![0_u8; CHUNK_LEN];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.truncate(n);
            let read = read + n as u64;
            if let Some((h, _)) = hash.as_mut() {
                h.update(&buf);
            }
            if read == len
                && let Some((h, tx)) = hash.take()
            {
                let _ = tx.send(h.finish());
            }
            bar.inc(n as u64);
            Ok(Some((buf, (file, bar, hash, read))))
        });
    (tally_client::Body::wrap_stream(stream), digest_rx)
}

/// One line per product: id, state, price, title.
fn product_list(rows: &[ProductView]) -> String {
    if rows.is_empty() {
        return "(no products)".to_string();
    }
    rows.iter()
        .map(|p| {
            format!(
                "{}  {:9} {:>14}  {}",
                p.id,
                p.state.as_str(),
                p.price.to_string(),
                p.title
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An entry: name, kind, length and SHA-256.
fn entry_line(e: &EntryView) -> String {
    format!(
        "{:30} {:9} {:>12} bytes  sha256 {}",
        e.name, e.kind, e.plain_len, e.plain_sha256
    )
}

/// A product and its entries, one `label value` per line.
fn product_summary(p: &ProductView) -> String {
    let mut out = format!(
        "product   {}\ntitle     {}\nprice     {}\npay to    {}\nmerchant  {}\nproducer  {}\nstate     {}\nentries",
        p.id, p.title, p.price, p.pay_to, p.merchant, p.producer, p.state,
    );
    for e in &p.entries {
        out.push_str(&format!("\n  {}", entry_line(e)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_kernel::Timestamp;

    fn product(entries: Vec<EntryView>) -> ProductView {
        ProductView {
            id: Id::new(),
            merchant: "shop".into(),
            producer: "shop".into(),
            title: "Night Songs".into(),
            price: "9.90 EUR".parse().expect("amount"),
            pay_to: Id::new(),
            licence: "Personal use only.".into(),
            instructions: String::new(),
            registration_template: String::new(),
            state: ProductState::Active,
            entries,
            created_at: Timestamp(0),
        }
    }

    #[test]
    fn products_list_in_aligned_columns() {
        let p = product(Vec::new());
        assert_eq!(product_list(&[]), "(no products)");
        assert_eq!(
            product_list(std::slice::from_ref(&p)),
            format!("{}  active          9.90 EUR  Night Songs", p.id)
        );
    }

    #[test]
    fn a_summary_lists_the_entries() {
        let p = product(vec![EntryView {
            name: "song.bin".into(),
            kind: "product".into(),
            plain_len: 12,
            plain_sha256: "ab".repeat(32),
            sealed_len: 40,
        }]);
        let text = product_summary(&p);
        assert!(
            text.contains("\nstate     active\nentries\n  song.bin"),
            "{text}"
        );
        assert!(
            text.contains(
                "song.bin                       product             12 bytes  sha256 abab"
            ),
            "{text}"
        );
    }
}
