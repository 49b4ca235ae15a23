//! Node permissions as xenstored keeps them: a list whose first entry names the owner and the
//! access of every domain not listed, each further entry one domain's access.
//! On the wire an entry is a letter and a domain id: `n0`, `r5`, `w7`, `b3`.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The access one permission entry grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: neither read nor write.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// The wire letter.
    pub const fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }
}

/// One permission entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain the entry is about (the owner, for the first entry of a list).
    pub domid: u32,
    /// The access it grants (for the first entry: the access of domains not listed).
    pub access: Access,
}

impl Perm {
    /// An entry for `domid` with `access`.
    pub const fn new(domid: u32, access: Access) -> Perm {
        Perm { domid, access }
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid)
    }
}

impl FromStr for Perm {
    type Err = Error;

    /// Parses `n0`, `r5`, `w7`, `b3`.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for an unknown letter or a bad domain id.
    fn from_str(s: &str) -> Result<Perm, Error> {
        let mut chars = s.chars();
        let access = match chars.next() {
            Some('n') => Access::None,
            Some('r') => Access::Read,
            Some('w') => Access::Write,
            Some('b') => Access::Both,
            _ => return Err(Error::Protocol(format!("bad permission entry {s:?}"))),
        };
        let domid = chars
            .as_str()
            .parse::<u32>()
            .map_err(|_| Error::Protocol(format!("bad domain id in permission entry {s:?}")))?;
        Ok(Perm { domid, access })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        for (s, p) in [
            ("n0", Perm::new(0, Access::None)),
            ("r5", Perm::new(5, Access::Read)),
            ("w7", Perm::new(7, Access::Write)),
            ("b32753", Perm::new(32753, Access::Both)),
        ] {
            assert_eq!(s.parse::<Perm>().unwrap(), p);
            assert_eq!(p.to_string(), s);
        }
        for bad in ["", "x1", "r", "r-1", "rr", "b 1"] {
            assert!(bad.parse::<Perm>().is_err(), "{bad}");
        }
    }
}
