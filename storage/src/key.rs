//! Tuple keys. Strings are written as their bytes followed by a 0x00 terminator (ids never
//! contain NUL), integers big-endian (signed ones with the sign bit flipped) so that the byte
//! order of encoded keys equals the order of the tuples and a prefix of a tuple is a byte prefix.

/// One component of a tuple key.
pub trait KeyPart {
    fn encode_part(&self, out: &mut Vec<u8>);
}

impl KeyPart for str {
    fn encode_part(&self, out: &mut Vec<u8>) {
        debug_assert!(!self.as_bytes().contains(&0), "key strings must not contain NUL");
        out.extend_from_slice(self.as_bytes());
        out.push(0);
    }
}

impl KeyPart for String {
    fn encode_part(&self, out: &mut Vec<u8>) {
        self.as_str().encode_part(out)
    }
}

impl<T: KeyPart + ?Sized> KeyPart for &T {
    fn encode_part(&self, out: &mut Vec<u8>) {
        (**self).encode_part(out)
    }
}

impl KeyPart for u64 {
    fn encode_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
}

impl KeyPart for i64 {
    fn encode_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&((*self as u64) ^ (1 << 63)).to_be_bytes());
    }
}

impl KeyPart for [u8; 32] {
    fn encode_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

/// A whole key: a single part or a tuple of parts.
pub trait KeyTuple {
    fn encode_key(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        self.encode_into(&mut out);
        out
    }
    fn encode_into(&self, out: &mut Vec<u8>);
}

impl<T: KeyPart + ?Sized> KeyTuple for T {
    fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_part(out)
    }
}

macro_rules! tuple_key {
    ($($name:ident),+) => {
        impl<$($name: KeyPart),+> KeyTuple for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_into(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_part(out);)+
            }
        }
    };
}
tuple_key!(A);
tuple_key!(A, B);
tuple_key!(A, B, C);
tuple_key!(A, B, C, D);
tuple_key!(A, B, C, D, E);
tuple_key!(A, B, C, D, E, F);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_order_matches_byte_order() {
        let values = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let encoded: Vec<Vec<u8>> = values.iter().map(|v| v.encode_key()).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        assert!(1u64.encode_key() < 256u64.encode_key());
    }

    #[test]
    fn tuple_prefix_is_byte_prefix() {
        let full = ("acct", "ws", 42u64).encode_key();
        let prefix = ("acct",).encode_key();
        assert!(full.starts_with(&prefix));
        // "ac" must not be a prefix of ("acct",): the terminator separates them.
        assert!(!full.starts_with(&("ac",).encode_key()));
    }
}
