//! Rate tables (YAML) and the LiteLLM price-list import (JSON), chosen by the first byte;
//! a table that loads must price a request without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    if sel % 2 == 0 {
        let dir = std::env::temp_dir();
        if let Ok(table) = tollgate::cost::RateTable::parse(text, &dir) {
            let _ = table.imported_rows();
        }
    } else {
        let _ = tollgate::cost::litellm::import_litellm(text);
    }
});
