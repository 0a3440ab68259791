//! Configuration text: safe YAML parsing, `${env:...}` substitution and the full
//! validation (`tollgate validate`), which must never panic or overflow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = tollgate::config::parse_yaml(text, "fuzz.yaml");
    if let Ok(doc) = tollgate::config::load_str(text) {
        let _ = tollgate::service::parse(&doc);
    }
});
