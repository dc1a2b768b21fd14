//! The identity-code parser on any bytes: never panics, and what it accepts is the input itself,
//! eleven characters with a real birth date.
#![no_main]

use libfuzzer_sys::fuzz_target;
use referral_exchange::domain::PersonalIdentityCode;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(code) = PersonalIdentityCode::parse(text) {
        assert_eq!(code.as_str(), text);
        assert_eq!(text.chars().count(), 11);
        let born = code.birth_date();
        assert_eq!(code.age_on(born), 0);
    }
});
