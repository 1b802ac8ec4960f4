//! The few protobuf encodings a Perfetto trace needs, by hand: varints and
//! length-delimited fields. No schema compiler (`protoc`) on the machine,
//! and eight messages do not need one; the tests decode what this writes
//! with Perfetto's own schema (`perfetto_trace_pb2`).

/// One protobuf message being built, fields in the order they are added.
#[derive(Default)]
pub struct Msg(Vec<u8>);

const VARINT: u32 = 0;
const LEN: u32 = 2;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Msg {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&mut self, field: u32, wire: u32) {
        varint(&mut self.0, u64::from(field << 3 | wire));
    }

    /// `uint32`/`uint64`/`bool`/enum field.
    pub fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, VARINT);
        varint(&mut self.0, v);
        self
    }

    /// `int32`/`int64` field (two's complement, as protobuf encodes them).
    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.uint(field, v as u64)
    }

    pub fn string(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    pub fn message(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.0)
    }

    fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, LEN);
        varint(&mut self.0, b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_protobuf() {
        // From the protobuf encoding guide: field 1 = 150 is 08 96 01.
        assert_eq!(Msg::new().uint(1, 150).as_bytes(), [0x08, 0x96, 0x01]);
        // Field 2 = "testing" is 12 07 74 65 73 74 69 6e 67.
        assert_eq!(
            Msg::new().string(2, "testing").as_bytes(),
            [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']
        );
        // A negative int64 takes ten bytes.
        assert_eq!(Msg::new().int(1, -1).as_bytes().len(), 11);
        // A field number past 15 takes a two-byte key (60 << 3 | 2 = 482).
        assert_eq!(Msg::new().message(60, &Msg::new()).as_bytes(), [0xe2, 0x03, 0x00]);
    }
}
