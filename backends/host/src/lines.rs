//! A one-line text form of HARNESS records and free text, for carrying them out of a guest set-up
//! through a console or a pipe (the Xen certification payload prints them, the runner parses
//! them): fields are separated by single spaces, and text fields are their UTF-8 bytes in
//! lowercase hex, or `-` when empty, so that no field holds a space or a newline.

use std::fmt::Write as _;

use pvabi::harness::Outcome;

use crate::vm::Report;

/// Encodes a text field: lowercase hex of its bytes, `-` for the empty string.
pub fn encode_field(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Decodes a field of [`encode_field`]; `None` when it is not one (odd length, not hex).
/// Bytes that are not UTF-8 become U+FFFD.
pub fn decode_field(field: &str) -> Option<String> {
    if field == "-" {
        return Some(String::new());
    }
    if field.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..field.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(field.get(i..i + 2)?, 16).ok())
        .collect();
    Some(String::from_utf8_lossy(&bytes?).into_owned())
}

impl Report {
    /// The record as one line: `<outcome> <vcpu> <clauses> <name> <detail>`, the outcome and
    /// vCPU in decimal, the clause ids (comma-separated), name and detail as [`encode_field`].
    pub fn to_line(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.outcome.0,
            self.vcpu,
            encode_field(&self.clauses.join(",")),
            encode_field(&self.name),
            encode_field(&self.detail)
        )
    }

    /// Parses a line of [`Report::to_line`]; `None` when it is not one.
    pub fn from_line(line: &str) -> Option<Report> {
        let f: Vec<&str> = line.split(' ').collect();
        let [outcome, vcpu, clauses, name, detail] = f.as_slice() else {
            return None;
        };
        let clauses = decode_field(clauses)?;
        Some(Report {
            outcome: Outcome(outcome.parse().ok()?),
            clauses: if clauses.is_empty() {
                Vec::new()
            } else {
                clauses.split(',').map(String::from).collect()
            },
            name: decode_field(name)?,
            detail: decode_field(detail)?,
            vcpu: vcpu.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_lines_are_refused() {
        let r = Report {
            outcome: Outcome::FAILED,
            clauses: vec!["BASE-1".into(), "BASE-2".into()],
            name: "base::x".into(),
            detail: "a b\nc".into(),
            vcpu: 3,
        };
        assert_eq!(Report::from_line(&r.to_line()), Some(r));
        let empty = Report {
            outcome: Outcome::END,
            clauses: Vec::new(),
            name: String::new(),
            detail: String::new(),
            vcpu: 0,
        };
        assert_eq!(empty.to_line(), "3 0 - - -");
        assert_eq!(Report::from_line("3 0 - - -"), Some(empty));
        for bad in [
            "2 zz - - -",
            "1 0 4 - -",
            "1 0 - -",
            "1 0 - - - ",
            "x 0 - - -",
        ] {
            assert_eq!(Report::from_line(bad), None, "{bad:?}");
        }
        assert_eq!(decode_field("4"), None);
        assert_eq!(decode_field("zz"), None);
        assert_eq!(
            decode_field(&encode_field("héllo")).as_deref(),
            Some("héllo")
        );
    }
}
