//! Where a Go function's body starts: just past its stack-growth check. A function that
//! needs more stack branches to a block that calls runtime.morestack and then jumps back to
//! the function's FIRST instruction, which therefore runs twice for one call. A uprobe there
//! fires twice; one past the check fires once per call, with the arguments still where the
//! ABI put them (the check only uses scratch registers and moves no stack pointer).
//!
//! Must stay true: the returned address is a decoded instruction boundary inside the
//! function; when the pattern is not recognised (a NOSPLIT function has no check) the entry
//! itself is returned.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use yaxpeax_arch::{Decoder as _, U8Reader};
use yaxpeax_arm::armv8::a64::{InstDecoder, Opcode, Operand};

use crate::Arch;

/// How many instructions from the entry the stack check may take.
const CHECK_WINDOW: usize = 8;

/// The address just past the stack check of the function at `vaddr` (its entry if none).
pub(crate) fn body_start(arch: Arch, vaddr: u64, code: &[u8]) -> u64 {
    match arch {
        Arch::Amd64 => amd64(vaddr, code),
        Arch::Arm64 => arm64(vaddr, code),
    }
    .unwrap_or(vaddr)
}

/// The stack check's branch to the morestack block, when it is a `JBE` (taken when SP is at or
/// below the stack guard: CF or ZF set by the compare before it): amd64 only.
///
/// A probe there costs little (the kernel emulates a conditional branch; the body's first
/// instruction it may have to single-step) and sees the arguments where the ABI put them;
/// it runs twice for a call whose stack grows, and the flags tell the two runs apart: only
/// the run where the branch is not taken goes on into the body.
pub(crate) fn stack_check_branch(arch: Arch, vaddr: u64, code: &[u8]) -> Option<u64> {
    match arch {
        Arch::Amd64 => {
            let (insts, check) = amd64_check(vaddr, code)?;
            let inst = insts.get(check)?;
            (inst.mnemonic() == Mnemonic::Jbe).then(|| inst.ip())
        }
        Arch::Arm64 => None,
    }
}

fn amd64(vaddr: u64, code: &[u8]) -> Option<u64> {
    let (insts, check) = amd64_check(vaddr, code)?;
    insts.get(check + 1).map(Instruction::ip)
}

/// The decoded instructions and the index of the stack check's branch.
fn amd64_check(vaddr: u64, code: &[u8]) -> Option<(Vec<Instruction>, usize)> {
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut insts = Vec::new();
    while decoder.can_decode() {
        let inst: Instruction = decoder.decode();
        if inst.is_invalid() {
            break;
        }
        insts.push(inst);
    }
    // The morestack block ends with a jump back to the entry.
    let back = insts.iter().rposition(|i| i.mnemonic() == Mnemonic::Jmp && i.near_branch_target() == vaddr)?;
    let back_ip = insts.get(back)?.ip();
    let check = insts
        .iter()
        .take(CHECK_WINDOW)
        .position(|i| is_jcc(i.mnemonic()) && i.near_branch_target() > i.ip() && i.near_branch_target() <= back_ip)?;
    Some((insts, check))
}

fn is_jcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(m, Ja | Jae | Jb | Jbe | Je | Jne | Jg | Jge | Jl | Jle | Jo | Jno | Jp | Jnp | Js | Jns)
}

fn arm64(vaddr: u64, code: &[u8]) -> Option<u64> {
    let decoder = InstDecoder::default();
    let pc = |i: usize| (i as u64).checked_mul(4).and_then(|o| vaddr.checked_add(o));
    let target = |i: usize, off: i64| pc(i).and_then(|p| p.checked_add_signed(off));
    let decoded: Vec<_> = code.chunks_exact(4).map(|w| decoder.decode(&mut U8Reader::new(w)).ok()).collect();
    let back = decoded.iter().enumerate().rev().find_map(|(i, inst)| {
        let inst = inst.as_ref()?;
        match (inst.opcode, inst.operands[0]) {
            (Opcode::B, Operand::PCOffset(off)) if target(i, off) == Some(vaddr) => pc(i),
            _ => None,
        }
    })?;
    let check = decoded.iter().take(CHECK_WINDOW).enumerate().find_map(|(i, inst)| {
        let inst = inst.as_ref()?;
        let Opcode::Bcc(_) = inst.opcode else { return None };
        let Operand::PCOffset(off) = inst.operands[0] else { return None };
        let t = target(i, off)?;
        (t > pc(i)? && t <= back).then_some(i)
    })?;
    pc(check + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amd64_register_abi_prologue() {
        // 0: cmp rsp,[r14+0x10]; 4: jbe 0xb; 6: push rbp; 7: mov rbp,rsp; a: ret
        // b: call (morestack, any target); 10: jmp 0
        let code = [
            0x49, 0x3b, 0x66, 0x10, 0x76, 0x05, 0x55, 0x48, 0x89, 0xe5, 0xc3, 0xe8, 0x00, 0x00, 0x00, 0x00, 0xeb, 0xee,
        ];
        assert_eq!(body_start(Arch::Amd64, 0, &code), 6);
    }

    #[test]
    fn amd64_stack_check_branch() {
        let code = [
            0x49, 0x3b, 0x66, 0x10, 0x76, 0x05, 0x55, 0x48, 0x89, 0xe5, 0xc3, 0xe8, 0x00, 0x00, 0x00, 0x00, 0xeb, 0xee,
        ];
        assert_eq!(stack_check_branch(Arch::Amd64, 0, &code), Some(4));
        // A check branching on another condition is not taken for one.
        let mut jb = code;
        jb[4] = 0x72; // jb
        assert_eq!(stack_check_branch(Arch::Amd64, 0, &jb), None);
        assert_eq!(body_start(Arch::Amd64, 0, &jb), 6);
    }

    #[test]
    fn amd64_without_check_is_the_entry() {
        let code = [0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3]; // push rbp; mov rbp,rsp; pop rbp; ret
        assert_eq!(body_start(Arch::Amd64, 0x1000, &code), 0x1000);
    }

    #[test]
    fn arm64_prologue() {
        let words: [u32; 6] = [
            0xf9400b90, // ldr x16, [x28, #16]
            0xeb3063ff, // cmp sp, x16
            0x54000069, // b.ls +12 (to index 5)
            0xd503201f, // nop (body)
            0xd65f03c0, // ret
            0x17fffffb, // b -20 (to index 0)
        ];
        let code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(body_start(Arch::Arm64, 0x4000, &code), 0x400c);
    }
}
