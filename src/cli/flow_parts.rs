//! The flags that choose which part of each flow becomes tokens, shared by
//! `tmoe tokenize`, `tmoe vocab` and `tmoe inspect` (same names, same defaults).

use crate::cli::args;
use crate::traffic::capture::reader::ReadConfig;
use crate::traffic::tokens::features::View;
use crate::traffic::tokens::tokenize::TokenizerConfig;

#[derive(clap::Args, Debug, Clone)]
pub struct FlowPartsArgs {
    /// Packets per flow (K).
    #[arg(long, value_parser = args::count, default_value_t = 10)]
    pub packets: usize,
    /// Payload bytes per packet.
    #[arg(long, default_value_t = 40)]
    pub payload_bytes: usize,
    /// Which packet parts enter the tokens.
    #[arg(long, value_enum, default_value_t = View::Full)]
    pub view: View,
    /// Zero payload bytes that spell the flow's own IP or MAC addresses (as
    /// bytes or text) or ports before tokenizing, so a model cannot read who a device
    /// is (no new token, same vocabulary; `tokenize` records it in
    /// dataset.json, `vocab` and `inspect` write none).
    #[arg(long)]
    pub mask_identifiers: bool,
}

impl FlowPartsArgs {
    /// Tokenizer settings with the default sequence length.
    pub fn tokenizer(&self) -> TokenizerConfig {
        TokenizerConfig {
            packets: self.packets,
            payload_bytes: self.payload_bytes,
            view: self.view,
            mask_identifiers: self.mask_identifiers,
            ..TokenizerConfig::default()
        }
    }

    /// Reader settings that keep what the tokenizer will use (with
    /// `--mask-identifiers`, the bytes matched past the payload window too).
    pub fn reader(&self) -> ReadConfig {
        ReadConfig {
            max_packets: self.packets,
            payload_bytes: self.tokenizer().payload_bytes_read(),
            ..ReadConfig::default()
        }
    }
}
