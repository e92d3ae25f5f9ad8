//! Instruction decoding of function bodies: return instructions (for uprobes at every RET)
//! and direct branch targets (to tell ABI wrappers from bodies). iced-x86 for amd64 (only
//! instruction starts count), yaxpeax-arm for arm64.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use yaxpeax_arch::{Decoder as _, U8Reader};
use yaxpeax_arm::armv8::a64::{InstDecoder, Opcode, Operand};

use crate::{Arch, Error};

/// Longest function decoded. Go's largest real functions are a few hundred KiB; a symbol that
/// claims more (a crafted file: one 4 GB "function" in a sparse file) is refused, not decoded.
pub const MAX_FUNCTION_BYTES: usize = 8 << 20;

/// Addresses of every return instruction in `code`, which is loaded at `vaddr`.
/// `name` only labels errors.
pub(crate) fn find_returns(arch: Arch, name: &str, vaddr: u64, code: &[u8]) -> Result<Vec<u64>, Error> {
    if code.len() > MAX_FUNCTION_BYTES {
        return Err(Error::malformed(format!(
            "{name} claims {} bytes of code, more than any Go function ({MAX_FUNCTION_BYTES} at most)",
            code.len()
        )));
    }
    match arch {
        Arch::Amd64 => amd64(name, vaddr, code),
        Arch::Arm64 => Ok(arm64(vaddr, code)),
    }
}

/// Linear sweep from the entry. Go places no data in amd64 text, so every byte up to the
/// end is an instruction, except trailing INT3 (0xCC) padding, where the sweep stops. The
/// padding is measured once, from the end: checking "only INT3 from here on" at every
/// instruction was quadratic in a body of INT3s.
fn amd64(name: &str, vaddr: u64, code: &[u8]) -> Result<Vec<u64>, Error> {
    let padding = code.iter().rev().take_while(|&&b| b == 0xcc).count();
    let body = &code[..code.len() - padding];
    let mut decoder = Decoder::with_ip(64, body, vaddr, DecoderOptions::NONE);
    let mut inst = Instruction::default();
    let mut out = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut inst);
        if inst.is_invalid() {
            return Err(Error::Decode { function: name.to_string(), vaddr: inst.ip(), arch: "amd64" });
        }
        if matches!(inst.mnemonic(), Mnemonic::Ret | Mnemonic::Retf) {
            out.push(inst.ip());
        }
    }
    Ok(out)
}

/// Every aligned 4-byte word; words that do not decode (literal pool data, zero padding)
/// are skipped. Any RET form counts (`RET`, `RET Xn`, and the pointer-authenticated ones).
fn arm64(vaddr: u64, code: &[u8]) -> Vec<u64> {
    let decoder = InstDecoder::default();
    let mut out = Vec::new();
    for (i, word) in code.chunks_exact(4).enumerate() {
        let mut reader = U8Reader::new(word);
        let Ok(inst) = decoder.decode(&mut reader) else {
            continue;
        };
        let is_ret = matches!(
            inst.opcode,
            Opcode::RET
                | Opcode::RETAA
                | Opcode::RETAB
                | Opcode::RETAASPPC
                | Opcode::RETABSPPC
                | Opcode::RETAASPPCR
                | Opcode::RETABSPPCR
        );
        if is_ret {
            if let Some(addr) = (i as u64).checked_mul(4).and_then(|o| vaddr.checked_add(o)) {
                out.push(addr);
            }
        }
    }
    out
}

/// Targets of the direct calls and unconditional jumps in `code` (at `vaddr`). Decoding
/// stops at the first undecodable amd64 byte; arm64 skips undecodable words.
pub(crate) fn branch_targets(arch: Arch, vaddr: u64, code: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let code = &code[..code.len().min(MAX_FUNCTION_BYTES)];
    match arch {
        Arch::Amd64 => {
            let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
            let mut inst = Instruction::default();
            while decoder.can_decode() {
                decoder.decode_out(&mut inst);
                if inst.is_invalid() {
                    break;
                }
                if matches!(inst.mnemonic(), Mnemonic::Call | Mnemonic::Jmp) {
                    let target = inst.near_branch_target();
                    if target != 0 {
                        out.push(target);
                    }
                }
            }
        }
        Arch::Arm64 => {
            let decoder = InstDecoder::default();
            for (i, word) in code.chunks_exact(4).enumerate() {
                let Ok(inst) = decoder.decode(&mut U8Reader::new(word)) else {
                    continue;
                };
                if let (Opcode::B | Opcode::BL, Operand::PCOffset(off)) = (inst.opcode, inst.operands[0]) {
                    let pc = (i as u64).checked_mul(4).and_then(|o| vaddr.checked_add(o));
                    if let Some(t) = pc.and_then(|pc| pc.checked_add_signed(off)) {
                        out.push(t);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amd64_ret_only_at_instruction_starts() {
        // mov eax, 0xc3c3c3c3 (contains C3 bytes that are not instructions); ret; int3 padding
        let code = [0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xcc, 0xcc];
        assert_eq!(find_returns(Arch::Amd64, "f", 0x1000, &code).unwrap(), vec![0x1005]);
        // ret imm16 and retf count too.
        let code = [0xc2, 0x08, 0x00, 0xcb];
        assert_eq!(find_returns(Arch::Amd64, "f", 0, &code).unwrap(), vec![0, 3]);
    }

    /// A body of INT3s (each one an instruction) with a RET at its end: linear, not quadratic
    /// (the old per-instruction padding check took hours on this).
    #[test]
    fn amd64_a_body_of_int3_is_decoded_in_one_sweep() {
        let mut code = vec![0xcc; 4 << 20];
        code.push(0xc3);
        code.extend_from_slice(&[0xcc; 15]);
        assert_eq!(find_returns(Arch::Amd64, "f", 0, &code).unwrap(), vec![4 << 20]);
    }

    #[test]
    fn functions_larger_than_any_go_function_are_refused() {
        let code = vec![0x90; MAX_FUNCTION_BYTES + 1];
        let err = find_returns(Arch::Amd64, "huge", 0, &code).unwrap_err();
        assert!(err.to_string().contains("huge claims"), "{err}");
    }

    #[test]
    fn amd64_undecodable_is_an_error() {
        let code = [0x0f, 0x0b, 0x0f]; // ud2, then a truncated two-byte opcode
        let err = find_returns(Arch::Amd64, "f", 0x10, &code).unwrap_err();
        assert!(matches!(err, Error::Decode { vaddr: 0x12, .. }), "{err:?}");
    }

    #[test]
    fn arm64_ret_forms() {
        let mut code = Vec::new();
        code.extend_from_slice(&0xd65f03c0u32.to_le_bytes()); // ret
        code.extend_from_slice(&0xd503201fu32.to_le_bytes()); // nop
        code.extend_from_slice(&0xd65f0020u32.to_le_bytes()); // ret x1
        code.extend_from_slice(&0x00000000u32.to_le_bytes()); // udf / padding
        code.extend_from_slice(&[0xc0, 0x03]); // trailing half word ignored
        assert_eq!(find_returns(Arch::Arm64, "f", 0x4000, &code).unwrap(), vec![0x4000, 0x4008]);
    }
}
