//! Section sizes of a 32-bit little-endian ELF (the firmware), read from its section headers:
//! enough to say how much flash and static RAM a Cortex-M image uses, without binutils.

use anyhow::{Context, Result, bail};

const SHF_ALLOC: u32 = 0x2;
const SHT_NOBITS: u32 = 8;

/// One allocated section.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Name from the section-name string table.
    pub name: String,
    /// Run-time address.
    pub addr: u32,
    /// Size in bytes.
    pub size: u32,
    /// Occupies no file space (`.bss`, `.uninit`).
    pub nobits: bool,
}

fn u16_at(data: &[u8], off: usize) -> Result<u16> {
    let bytes = data.get(off..off + 2).context("ELF truncated")?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(data: &[u8], off: usize) -> Result<u32> {
    let bytes = data.get(off..off + 4).context("ELF truncated")?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// The allocated (`SHF_ALLOC`) sections of an ELF32 LE image.
pub fn alloc_sections(data: &[u8]) -> Result<Vec<Section>> {
    if data.get(..4) != Some(b"\x7fELF".as_slice()) {
        bail!("not an ELF file");
    }
    if data.get(4) != Some(&1) || data.get(5) != Some(&1) {
        bail!("not a 32-bit little-endian ELF file");
    }
    let shoff = u32_at(data, 0x20)? as usize;
    let shentsize = usize::from(u16_at(data, 0x2E)?);
    let shnum = usize::from(u16_at(data, 0x30)?);
    let shstrndx = usize::from(u16_at(data, 0x32)?);
    if shentsize < 40 {
        bail!("ELF section header entries of {shentsize} bytes");
    }
    let header = |i: usize| shoff + i * shentsize;
    let strtab_off = u32_at(data, header(shstrndx) + 0x10)? as usize;
    let mut sections = Vec::new();
    for i in 0..shnum {
        let h = header(i);
        let flags = u32_at(data, h + 0x08)?;
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        let name_off = strtab_off + u32_at(data, h)? as usize;
        let name_bytes = data
            .get(name_off..)
            .context("ELF section name out of range")?;
        let end = name_bytes.iter().position(|&b| b == 0).unwrap_or(0);
        sections.push(Section {
            name: String::from_utf8_lossy(&name_bytes[..end]).into_owned(),
            addr: u32_at(data, h + 0x0C)?,
            size: u32_at(data, h + 0x14)?,
            nobits: u32_at(data, h + 0x04)? == SHT_NOBITS,
        });
    }
    Ok(sections)
}

/// Flash and static RAM of a Cortex-M image whose RAM starts at `ram_origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// Bytes stored in flash: code, read-only data, vector table and `.data`'s initial values.
    pub flash_bytes: u64,
    /// Statically allocated RAM: `.data`, `.bss`, `.uninit`.
    pub static_ram_bytes: u64,
}

/// Sums `sections` into flash and static RAM.
pub fn memory_use(sections: &[Section], ram_origin: u32) -> MemoryUse {
    let mut flash_bytes = 0u64;
    let mut static_ram_bytes = 0u64;
    for s in sections {
        if s.addr >= ram_origin {
            static_ram_bytes += u64::from(s.size);
            if !s.nobits {
                flash_bytes += u64::from(s.size); // initial values live in flash
            }
        } else if !s.nobits {
            flash_bytes += u64::from(s.size);
        }
    }
    MemoryUse {
        flash_bytes,
        static_ram_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_flash_and_ram() {
        let s = |name: &str, addr, size, nobits| Section {
            name: name.to_owned(),
            addr,
            size,
            nobits,
        };
        let sections = [
            s(".vector_table", 0, 0x400, false),
            s(".text", 0x400, 1000, false),
            s(".rodata", 0x2000, 500, false),
            s(".data", 0x2000_0000, 8, false),
            s(".bss", 0x2000_0008, 100, true),
        ];
        let m = memory_use(&sections, 0x2000_0000);
        assert_eq!(m.flash_bytes, 0x400 + 1000 + 500 + 8);
        assert_eq!(m.static_ram_bytes, 108);
        assert!(alloc_sections(b"not an elf").is_err());
    }
}
