//! Code caches (isolated-vm's `cachedData`, tests/cached-data.js), sealed so that a forged
//! blob never reaches V8 (CVE-2022-39266).

use ivm::{CacheKey, CachedData, CompileOptions, Isolate, IsolateOptions};

const SOURCE: &str = "function add(a, b) { return a + b } add(20, 22)";

fn keyed(secret: u8) -> Isolate {
    Isolate::new(IsolateOptions::default().code_cache_key(CacheKey::new(&[secret; 32]).unwrap())).unwrap()
}

fn produce(isolate: &Isolate, source: &str) -> CachedData {
    let script = isolate.compile_script(source, &CompileOptions::default().produce_cached_data()).unwrap();
    assert_eq!(script.cached_data_rejected(), None, "nothing was supplied");
    script.cached_data().expect("a cache was made").clone()
}

#[test]
fn a_cache_is_made_and_used_with_isolated_vm_semantics() {
    let isolate = keyed(1);
    let cache = produce(&isolate, SOURCE);
    // Another isolate with the same key (e.g. the next run) uses it.
    let next = keyed(1);
    let script = next.compile_script(SOURCE, &CompileOptions::default().cached_data(cache.clone()).produce_cached_data()).unwrap();
    assert_eq!(script.cached_data_rejected(), Some(false));
    assert!(script.cached_data().is_none(), "no new cache when the supplied one was used");
    let context = next.create_context().unwrap();
    assert_eq!(script.run::<u32>(&context, &Default::default()).unwrap(), 42);
    // Stored and read back as bytes.
    let reread = CachedData::from_bytes(cache.as_bytes().to_vec());
    assert_eq!(next.compile_script(SOURCE, &CompileOptions::default().cached_data(reread)).unwrap().cached_data_rejected(), Some(false));
    // Modules too.
    let module = isolate.compile_module("export const x = 1", &CompileOptions::default().produce_cached_data()).unwrap();
    let module_cache = module.cached_data().unwrap().clone();
    let again = next.compile_module("export const x = 1", &CompileOptions::default().cached_data(module_cache.clone())).unwrap();
    assert_eq!(again.cached_data_rejected(), Some(false));
    // A module's cache is no script's cache.
    let script = next.compile_script("export const x = 1".replace("export ", "").as_str(), &CompileOptions::default().cached_data(module_cache)).unwrap();
    assert_eq!(script.cached_data_rejected(), Some(true));
}

#[test]
fn every_kind_of_forged_or_foreign_blob_is_rejected_and_the_code_still_runs() {
    let isolate = keyed(2);
    let cache = produce(&isolate, SOURCE);
    let bytes = cache.as_bytes();
    let mut flipped_payload = bytes.to_vec();
    let middle = flipped_payload.len() / 2;
    flipped_payload[middle] ^= 0x40;
    let mut flipped_tag = bytes.to_vec();
    *flipped_tag.last_mut().unwrap() ^= 1;
    let mut wrong_magic = bytes.to_vec();
    wrong_magic[0] = b'X';
    let forged: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped payload byte", flipped_payload),
        ("a flipped tag byte", flipped_tag),
        ("another magic", wrong_magic),
        ("truncated", bytes[..bytes.len() - 7].to_vec()),
        ("truncated to nothing", Vec::new()),
        ("a few bytes", vec![1, 2, 3]),
        ("raw V8 data without a seal", bytes[8 + 2 + 64 + 8..bytes.len() - 32].to_vec()),
    ];
    let context = isolate.create_context().unwrap();
    for (what, blob) in forged {
        let script = isolate.compile_script(SOURCE, &CompileOptions::default().cached_data(CachedData::from_bytes(blob))).unwrap();
        assert_eq!(script.cached_data_rejected(), Some(true), "{what}");
        assert_eq!(script.run::<u32>(&context, &Default::default()).unwrap(), 42, "{what}: compiled normally");
    }
    // Made under another key (another host, or this process's default key).
    let foreign = keyed(3);
    let script = foreign.compile_script(SOURCE, &CompileOptions::default().cached_data(cache.clone())).unwrap();
    assert_eq!(script.cached_data_rejected(), Some(true));
    let default_key = Isolate::new(Default::default()).unwrap();
    assert_eq!(default_key.compile_script(SOURCE, &CompileOptions::default().cached_data(cache.clone())).unwrap().cached_data_rejected(), Some(true));
    // Made for other source text: rejected, and a new cache is made when asked for.
    let other = isolate.compile_script("1 + 1", &CompileOptions::default().cached_data(cache).produce_cached_data()).unwrap();
    assert_eq!(other.cached_data_rejected(), Some(true));
    assert!(other.cached_data().is_some(), "produced because the supplied one was rejected");
}

#[test]
fn keys_are_long_enough() {
    assert_eq!(CacheKey::new(&[0; 16]).unwrap_err().kind(), ivm::ErrorKind::InvalidArgument);
    assert_eq!(CacheKey::generate_secret().unwrap().len(), 32);
}
