//! Payment instructions as a QR code: encoded by `qrcodegen` (Nayuki's reference encoder),
//! drawn here as an inline SVG path, one square per dark module, inside the four-module quiet
//! zone the standard asks for. No image library, no script; the same text is printed beside it.

use qrcodegen::{QrCode, QrCodeEcc};

/// Modules of quiet zone around the code.
const BORDER: i32 = 4;

/// The SVG of a QR code of `text` (error correction M), or `None` when the text does not fit a
/// QR code (the page then shows the text alone).
pub(crate) fn svg(text: &str, label: &str) -> Option<String> {
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium).ok()?;
    let size = qr.size();
    let mut path = String::new();
    for y in 0..size {
        for x in 0..size {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + BORDER, y + BORDER));
            }
        }
    }
    let full = size + 2 * BORDER;
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {full} {full}\" width=\"{px}\" \
         height=\"{px}\" role=\"img\" aria-label=\"{label}\" shape-rendering=\"crispEdges\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>",
        px = full * 4,
        label = super::escape(label),
    ))
}

/// The text a payment QR code carries: a `tally:pay` URI with the reference, the amount and
/// the account to pay to, each percent-encoded.
pub(crate) fn payment_uri(reference: &str, amount: &str, to: &str) -> String {
    format!(
        "tally:pay?reference={}&amount={}&to={}",
        encode(reference),
        encode(amount),
        encode(to)
    )
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payment_uri_is_percent_encoded() {
        // Golden value: what a payer's app reads from the code.
        assert_eq!(
            payment_uri(
                "K7QM-2X9B",
                "12.50 EUR",
                "0195f3c2-7a10-7000-8000-000000000001"
            ),
            "tally:pay?reference=K7QM-2X9B&amount=12.50%20EUR&to=0195f3c2-7a10-7000-8000-000000000001"
        );
        assert_eq!(encode("a&b=c?d/e"), "a%26b%3Dc%3Fd%2Fe");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn the_svg_draws_the_code_with_its_quiet_zone() {
        let text = "tally:pay?reference=K7QM-2X9B&amount=12.50%20EUR";
        let drawn = svg(text, "pay <here>").expect("fits");
        let qr = QrCode::encode_text(text, QrCodeEcc::Medium).expect("fits");
        let full = qr.size() + 2 * BORDER;
        assert!(drawn.starts_with("<svg "), "{drawn}");
        assert!(drawn.contains(&format!("viewBox=\"0 0 {full} {full}\"")));
        assert!(drawn.contains("aria-label=\"pay &lt;here&gt;\""), "{drawn}");
        let dark = (0..qr.size())
            .flat_map(|y| (0..qr.size()).map(move |x| (x, y)))
            .filter(|&(x, y)| qr.get_module(x, y))
            .count();
        assert_eq!(drawn.matches("h1v1h-1z").count(), dark);
        // The top-left finder pattern's corner sits just inside the quiet zone.
        assert!(drawn.contains(&format!("M{BORDER},{BORDER}h1v1h-1z")));
        assert_eq!(svg(&"x".repeat(5000), "too long"), None);
    }
}
