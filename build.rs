//! Keeps the cargo feature `bundled-rocksdb` honest. librocksdb-sys decides between Debian's
//! RocksDB and its own C++ by environment variables alone (`ROCKSDB_LIB_DIR`, `ROCKSDB_COMPILE`),
//! which a feature cannot set; `tools/env` sets them from the feature, and this check stops a
//! build in which the two disagree, instead of letting it link the other RocksDB in silence.

fn main() {
    println!("cargo:rerun-if-env-changed=ROCKSDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=ROCKSDB_COMPILE");
    let lib_dir = std::env::var_os("ROCKSDB_LIB_DIR").is_some();
    let compile = std::env::var("ROCKSDB_COMPILE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let links_system = lib_dir && !compile;
    if std::env::var_os("CARGO_FEATURE_BUNDLED_ROCKSDB").is_some() && links_system {
        panic!(
            "the feature bundled-rocksdb asks for RocksDB compiled from source, but ROCKSDB_LIB_DIR \
             is set: run through tools/ (tools/test --features bundled-rocksdb) or set ROCKSDB_COMPILE=1"
        );
    }
    if !links_system && std::env::var_os("CARGO_FEATURE_BUNDLED_ROCKSDB").is_none() {
        println!(
            "cargo:warning=RocksDB is being compiled from source (slow): source tools/env for \
             Debian's librocksdb-dev, or pass --features bundled-rocksdb to say this is meant"
        );
    }
}
