//! The wire format of the hand-over protocol (see `docs/handover-protocol.md`): 12-byte
//! frame headers, `key=value` text payloads, and the STATE payload with descriptor labels.

/// The newest protocol version this library speaks (negotiated in HELLO / WELCOME).
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest protocol version this library speaks.
pub(crate) const PROTOCOL_MIN: u32 = 1;
/// The most descriptors one hand-over may carry.
pub const MAX_FDS: usize = 64;
/// The largest text payload (HELLO, WELCOME, REFUSE).
pub(crate) const MAX_TEXT: usize = 64 << 10;

pub(crate) const MAGIC: [u8; 4] = *b"ULHO";
pub(crate) const FRAME_VERSION: u8 = 1;
pub(crate) const HEADER_LEN: usize = 12;

/// Frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Hello = 1,
    Welcome = 2,
    Refuse = 3,
    State = 4,
    Ack = 5,
    Bye = 6,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Refuse,
            4 => Kind::State,
            5 => Kind::Ack,
            6 => Kind::Bye,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Hello => "HELLO",
            Kind::Welcome => "WELCOME",
            Kind::Refuse => "REFUSE",
            Kind::State => "STATE",
            Kind::Ack => "ACK",
            Kind::Bye => "BYE",
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: Kind,
    pub nfds: u8,
    pub len: u32,
}

pub(crate) fn encode_header(kind: Kind, nfds: usize, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = FRAME_VERSION;
    h[5] = kind as u8;
    h[6] = nfds.min(u8::MAX as usize) as u8;
    h[8..].copy_from_slice(&(len.min(u32::MAX as usize) as u32).to_be_bytes());
    h
}

/// Decode a header; `Err` says what is wrong in words.
pub(crate) fn decode_header(h: &[u8; HEADER_LEN]) -> Result<Header, String> {
    if h[..4] != MAGIC {
        return Err("the peer does not speak the update-lock hand-over protocol".into());
    }
    if h[4] != FRAME_VERSION {
        return Err(format!("unknown frame format {}", h[4]));
    }
    let kind = Kind::from_u8(h[5]).ok_or_else(|| format!("unknown frame type {}", h[5]))?;
    let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    Ok(Header {
        kind,
        nfds: h[6],
        len,
    })
}

/// `key=value` lines; newlines in values become spaces.
pub(crate) fn encode_text(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = String::new();
    for (k, v) in fields {
        out.push_str(k);
        out.push('=');
        out.push_str(&v.replace(['\n', '\r'], " "));
        out.push('\n');
    }
    out.into_bytes()
}

/// Parsed `key=value` lines (unknown keys are kept and ignored by callers).
pub(crate) struct Text(Vec<(String, String)>);

impl Text {
    pub(crate) fn decode(payload: &[u8]) -> Result<Text, String> {
        let s = std::str::from_utf8(payload).map_err(|_| "a text frame is not UTF-8")?;
        let mut v = Vec::new();
        for line in s.lines().filter(|l| !l.is_empty()) {
            let (k, val) = line
                .split_once('=')
                .ok_or_else(|| format!("malformed field {line:?}"))?;
            v.push((k.to_string(), val.to_string()));
        }
        Ok(Text(v))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn get_u32(&self, key: &str) -> Option<u32> {
        self.get(key).and_then(|v| v.parse().ok())
    }

    pub(crate) fn get_i32(&self, key: &str) -> Option<i32> {
        self.get(key).and_then(|v| v.parse().ok())
    }
}

/// STATE payload: label block length (u32, big-endian), labels (one per descriptor, each
/// ending in `\n`), then the state blob.
pub(crate) fn encode_state(labels: &[&str], state: &[u8]) -> Vec<u8> {
    let mut block = String::new();
    for l in labels {
        block.push_str(&l.replace(['\n', '\r'], " "));
        block.push('\n');
    }
    let mut out = Vec::with_capacity(4 + block.len() + state.len());
    out.extend_from_slice(&(block.len() as u32).to_be_bytes());
    out.extend_from_slice(block.as_bytes());
    out.extend_from_slice(state);
    out
}

/// Split a STATE payload into labels and the state blob.
pub(crate) fn decode_state(payload: &[u8], nfds: usize) -> Result<(Vec<String>, Vec<u8>), String> {
    if payload.len() < 4 {
        return Err("a STATE frame is too short".into());
    }
    let n = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
    let rest = &payload[4..];
    if n > rest.len() {
        return Err("a STATE frame's label block runs past its end".into());
    }
    let block = std::str::from_utf8(&rest[..n]).map_err(|_| "descriptor labels are not UTF-8")?;
    let labels: Vec<String> = block.lines().map(str::to_string).collect();
    if labels.len() != nfds {
        return Err(format!(
            "the STATE frame names {} descriptors but carries {nfds}",
            labels.len()
        ));
    }
    Ok((labels, rest[n..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rejects() {
        let h = encode_header(Kind::State, 3, 70_000);
        assert_eq!(
            decode_header(&h),
            Ok(Header {
                kind: Kind::State,
                nfds: 3,
                len: 70_000
            })
        );
        let mut bad = h;
        bad[0] = b'X';
        assert!(decode_header(&bad).unwrap_err().contains("does not speak"));
        let mut bad = h;
        bad[5] = 99;
        assert!(decode_header(&bad).unwrap_err().contains("frame type 99"));
    }

    #[test]
    fn text_round_trip_strips_newlines() {
        let t = encode_text(&[("release", "v2\nx=1"), ("pid", "7")]);
        let t = Text::decode(&t).unwrap();
        assert_eq!(t.get("release"), Some("v2 x=1"));
        assert_eq!(t.get_i32("pid"), Some(7));
        assert!(Text::decode(b"no-equals\n").is_err());
    }

    #[test]
    fn state_round_trip_and_label_count() {
        let p = encode_state(&["http", "dev"], b"\x00\x01blob");
        let (labels, blob) = decode_state(&p, 2).unwrap();
        assert_eq!(labels, ["http", "dev"]);
        assert_eq!(blob, b"\x00\x01blob");
        assert!(decode_state(&p, 1).unwrap_err().contains("names 2"));
        assert!(decode_state(&[0, 0, 0, 9, b'a'], 0).is_err());
        let (l, b) = decode_state(&encode_state(&[], b""), 0).unwrap();
        assert!(l.is_empty() && b.is_empty());
    }
}
