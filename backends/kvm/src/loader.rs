//! Loading the guest ELF image.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::elf::Elf;
use linux_loader::loader::KernelLoader;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::layout::IMAGE_MIN;
use crate::Error;

const PT_LOAD: u32 = 1;

fn bad(path: &Path, why: impl Into<String>) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Loads the ELF at `path` into `mem` (of `mem_size` bytes) and returns (end of the image
/// rounded up to a page, entry point).
///
/// Every `PT_LOAD` segment must lie in `IMAGE_MIN..mem_size` (the loader's own structures are
/// below `IMAGE_MIN`), and so must the entry point.
///
/// # Errors
///
/// [`Error::Image`] when the file cannot be read, is no x86_64 ELF executable, or a segment or
/// the entry point lies outside the allowed range.
pub fn load_elf(mem: &GuestMemoryMmap, path: &Path, mem_size: u64) -> Result<(u64, u64), Error> {
    let mut f = File::open(path).map_err(|e| bad(path, e.to_string()))?;
    let mut ehdr = [0u8; 64];
    f.read_exact(&mut ehdr)
        .map_err(|e| bad(path, format!("reading ELF header: {e}")))?;
    let u16_at = |b: &[u8], o: usize| -> u16 {
        b.get(o..o + 2)
            .and_then(|s| s.try_into().ok())
            .map(u16::from_le_bytes)
            .unwrap_or(0)
    };
    let u32_at = |b: &[u8], o: usize| -> u32 {
        b.get(o..o + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
            .unwrap_or(0)
    };
    let u64_at = |b: &[u8], o: usize| -> u64 {
        b.get(o..o + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    };
    if ehdr.get(0..4) != Some(b"\x7fELF".as_slice()) || ehdr.get(4) != Some(&2) {
        return Err(bad(path, "not a 64-bit ELF file"));
    }
    if u16_at(&ehdr, 18) != 62 {
        return Err(bad(path, "not an x86_64 ELF file"));
    }
    let entry = u64_at(&ehdr, 24);
    let phoff = u64_at(&ehdr, 32);
    let phentsize = u64::from(u16_at(&ehdr, 54));
    let phnum = u64::from(u16_at(&ehdr, 56));
    if phentsize < 56 || phnum == 0 || phnum > 64 {
        return Err(bad(path, "bad program header table"));
    }
    let mut end = IMAGE_MIN;
    let mut entry_ok = false;
    for i in 0..phnum {
        let mut ph = [0u8; 56];
        f.seek(SeekFrom::Start(phoff.saturating_add(i * phentsize)))
            .and_then(|_| f.read_exact(&mut ph))
            .map_err(|e| bad(path, format!("reading program header {i}: {e}")))?;
        if u32_at(&ph, 0) != PT_LOAD {
            continue;
        }
        let paddr = u64_at(&ph, 24);
        let filesz = u64_at(&ph, 32);
        let memsz = u64_at(&ph, 40);
        let seg_end = paddr
            .checked_add(memsz.max(filesz))
            .ok_or_else(|| bad(path, format!("segment {i} wraps")))?;
        if paddr < IMAGE_MIN || seg_end > mem_size {
            return Err(bad(
                path,
                format!(
                    "segment {i} at {paddr:#x}..{seg_end:#x} is outside {IMAGE_MIN:#x}..{mem_size:#x}"
                ),
            ));
        }
        if (paddr..seg_end).contains(&entry) {
            entry_ok = true;
        }
        end = end.max(seg_end);
    }
    if !entry_ok {
        return Err(bad(
            path,
            format!("entry {entry:#x} is in no loaded segment"),
        ));
    }
    Elf::load(mem, None, &mut f, Some(GuestAddress(IMAGE_MIN)))
        .map_err(|e| bad(path, format!("loading: {e}")))?;
    Ok((end.next_multiple_of(4096), entry))
}
