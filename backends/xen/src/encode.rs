//! [`EncodedStore`]: what a pvabi store needs from xenstored beyond its own limits, as a layer
//! over any [`XenStoreOps`].
//!
//! Two things a pvabi STORE admits that xenstored refuses:
//! - **Path bytes.** A pvabi path byte is an ASCII letter or digit, `_`, `-` or `.`
//!   (`STORE-1`); xenstored's node names admit letters, digits, `-`, `/`, `_` and `@`, not `.`.
//!   Each `.` is stored as `@2e`; `@` never occurs in a pvabi path, so the encoding is
//!   one-to-one and decodes back exactly.
//! - **Value length.** A pvabi value may be 4096 bytes (`STORE-6`), but xenstored carries at
//!   most 4096 bytes per message, path included. A value longer than [`CHUNK`] bytes keeps its
//!   first [`CHUNK`] bytes in the node and the rest in a child named `@v1` (a name no encoded
//!   pvabi path component can have). Readers see the whole value, listings never show `@v1`,
//!   and watch events on it are dropped (the node's own write fires its event). A value of at
//!   most [`CHUNK`] bytes is the node's value as is, so such nodes read the same through
//!   xenstored directly.

use std::time::Duration;

use crate::error::{Error, Result, XsErrno};
use crate::ops::{TxnId, WatchEvent, XenStoreOps};
use crate::perms::Perm;

/// The most value bytes kept in a node itself.
pub const CHUNK: usize = 2048;
/// The child that holds the rest of a longer value.
pub const TAIL: &str = "@v1";
/// How often a chunked write outside a transaction retries its own transaction.
const RETRIES: u32 = 8;

/// Encodes a path for xenstored: `.` becomes `@2e`.
pub fn encode_path(path: &str) -> String {
    path.replace('.', "@2e")
}

/// Decodes a path from xenstored: `@2e` becomes `.`.
pub fn decode_path(path: &str) -> String {
    path.replace("@2e", ".")
}

/// A [`XenStoreOps`] that stores pvabi paths and values on a xenstored (see the module docs).
#[derive(Debug)]
pub struct EncodedStore<S: XenStoreOps> {
    inner: S,
}

impl<S: XenStoreOps> EncodedStore<S> {
    /// Wraps a xenstore connection.
    pub fn new(inner: S) -> EncodedStore<S> {
        EncodedStore { inner }
    }

    /// The connection underneath.
    pub fn inner(&mut self) -> &mut S {
        &mut self.inner
    }

    fn tail_of(path: &str) -> String {
        format!("{path}/{TAIL}")
    }

    /// Writes `value` at the encoded path `p`. A value of fewer than [`CHUNK`] bytes may leave
    /// an old tail behind: reads only look for a tail when the node holds exactly [`CHUNK`]
    /// bytes, and a write of exactly [`CHUNK`] bytes removes it.
    fn write_in(&mut self, txn: TxnId, p: &str, value: &[u8]) -> Result<()> {
        let tail = Self::tail_of(p);
        if value.len() > CHUNK {
            self.inner.write(txn, p, &value[..CHUNK])?;
            self.inner.write(txn, &tail, &value[CHUNK..])
        } else {
            self.inner.write(txn, p, value)?;
            if value.len() == CHUNK {
                match self.inner.remove(txn, &tail) {
                    Ok(()) | Err(Error::Xenstored(XsErrno::Enoent)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    }
}

impl<S: XenStoreOps> XenStoreOps for EncodedStore<S> {
    fn read(&mut self, txn: TxnId, path: &str) -> Result<Vec<u8>> {
        let p = encode_path(path);
        let mut v = self.inner.read(txn, &p)?;
        if v.len() == CHUNK {
            match self.inner.read(txn, &Self::tail_of(&p)) {
                Ok(rest) => v.extend_from_slice(&rest),
                Err(Error::Xenstored(XsErrno::Enoent)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(v)
    }

    fn write(&mut self, txn: TxnId, path: &str, value: &[u8]) -> Result<()> {
        let p = encode_path(path);
        // One node written, or a write inside the caller's transaction: one step as far as
        // anyone else can see. Otherwise the node and its tail change in a transaction.
        if txn != TxnId::NONE || value.len() < CHUNK {
            return self.write_in(txn, &p, value);
        }
        for _ in 0..RETRIES {
            let t = self.inner.transaction_start()?;
            match self.write_in(t, &p, value) {
                Ok(()) => match self.inner.transaction_end(t, true) {
                    Ok(()) => return Ok(()),
                    Err(Error::Xenstored(XsErrno::Eagain)) => continue,
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    let _ = self.inner.transaction_end(t, false);
                    return Err(e);
                }
            }
        }
        Err(Error::Xenstored(XsErrno::Eagain))
    }

    fn mkdir(&mut self, txn: TxnId, path: &str) -> Result<()> {
        self.inner.mkdir(txn, &encode_path(path))
    }

    fn directory(&mut self, txn: TxnId, path: &str) -> Result<Vec<String>> {
        Ok(self
            .inner
            .directory(txn, &encode_path(path))?
            .into_iter()
            .filter(|n| n != TAIL)
            .map(|n| decode_path(&n))
            .collect())
    }

    fn remove(&mut self, txn: TxnId, path: &str) -> Result<()> {
        self.inner.remove(txn, &encode_path(path))
    }

    fn get_perms(&mut self, txn: TxnId, path: &str) -> Result<Vec<Perm>> {
        self.inner.get_perms(txn, &encode_path(path))
    }

    fn set_perms(&mut self, txn: TxnId, path: &str, perms: &[Perm]) -> Result<()> {
        let p = encode_path(path);
        self.inner.set_perms(txn, &p, perms)?;
        let tail = Self::tail_of(&p);
        match self.inner.set_perms(txn, &tail, perms) {
            Ok(()) | Err(Error::Xenstored(XsErrno::Enoent)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        self.inner.watch(&encode_path(path), token)
    }

    fn unwatch(&mut self, path: &str, token: &str) -> Result<()> {
        self.inner.unwatch(&encode_path(path), token)
    }

    fn next_watch_event(&mut self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        loop {
            match self.inner.next_watch_event(timeout)? {
                // The node's own change fires its event; the tail's is noise.
                Some(e) if e.path.ends_with(&format!("/{TAIL}")) => continue,
                Some(e) => {
                    return Ok(Some(WatchEvent {
                        path: decode_path(&e.path),
                        token: e.token,
                    }))
                }
                None => return Ok(None),
            }
        }
    }

    fn transaction_start(&mut self) -> Result<TxnId> {
        self.inner.transaction_start()
    }

    fn transaction_end(&mut self, txn: TxnId, commit: bool) -> Result<()> {
        self.inner.transaction_end(txn, commit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemXenStore;

    fn store() -> (EncodedStore<MemXenStore>, MemXenStore) {
        let m = MemXenStore::new(&[0, 3]);
        (EncodedStore::new(m.connect(0)), m.connect(0))
    }

    #[test]
    fn dots_are_encoded_one_to_one() {
        assert_eq!(encode_path("/a/b.c/..x"), "/a/b@2ec/@2e@2ex");
        assert_eq!(decode_path(&encode_path("/a.b/c.d.e")), "/a.b/c.d.e");
        // Only xenstored's name bytes reach it.
        let e = encode_path("/local/domain/3/pvabi/Ab_9-x.y");
        assert!(e
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b)));
        let (mut s, mut raw) = store();
        s.write(TxnId::NONE, "/local/domain/3/pvabi/a.b", b"v")
            .expect("write");
        assert_eq!(
            raw.read(TxnId::NONE, "/local/domain/3/pvabi/a@2eb")
                .expect("raw"),
            b"v"
        );
        assert_eq!(
            s.directory(TxnId::NONE, "/local/domain/3/pvabi")
                .expect("dir"),
            vec!["a.b".to_string()]
        );
    }

    #[test]
    fn long_values_round_trip_and_stay_hidden() {
        let (mut s, mut raw) = store();
        let p = "/local/domain/3/pvabi/big";
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 4096] {
            let v: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            s.write(TxnId::NONE, p, &v).expect("write");
            assert_eq!(s.read(TxnId::NONE, p).expect("read"), v, "len {len}");
            let node = raw.read(TxnId::NONE, p).expect("raw");
            assert!(node.len() <= CHUNK);
        }
        // 4096 bytes, then exactly CHUNK bytes: no stale tail is appended.
        let v = vec![7u8; CHUNK];
        s.write(TxnId::NONE, p, &vec![1u8; 4096]).expect("write");
        s.write(TxnId::NONE, p, &v).expect("write");
        assert_eq!(s.read(TxnId::NONE, p).expect("read"), v);
        // A shorter value after a long one reads back as itself.
        s.write(TxnId::NONE, p, &vec![1u8; 4096]).expect("write");
        s.write(TxnId::NONE, p, b"short").expect("write");
        assert_eq!(s.read(TxnId::NONE, p).expect("read"), b"short");
        assert!(s.directory(TxnId::NONE, p).expect("dir").is_empty());
        s.remove(TxnId::NONE, p).expect("remove");
        assert!(raw.read(TxnId::NONE, &format!("{p}/{TAIL}")).is_err());
    }
}
