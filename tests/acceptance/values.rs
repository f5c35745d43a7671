use ivm::{BigInt, EvalOptions, Value};

use crate::new_context;

#[test]
fn rust_values_round_trip_through_an_isolate() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Shape {
        Circle { r: f64 },
        Square(u32),
        Empty,
    }
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Doc {
        id: u64,
        big: i64,
        ratio: f32,
        name: Option<String>,
        missing: Option<u8>,
        shapes: Vec<Shape>,
        #[serde(with = "serde_bytes_compat")]
        bytes: Vec<u8>,
    }
    mod serde_bytes_compat {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                    Ok(v)
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
    let doc = Doc {
        id: 7,
        big: i64::MAX,
        ratio: 0.5,
        name: Some("x".into()),
        missing: None,
        shapes: vec![Shape::Circle { r: 1.5 }, Shape::Square(2), Shape::Empty],
        bytes: vec![1, 2, 255],
    };
    let (_isolate, context) = new_context();
    context.set_global("doc", &doc).unwrap();
    let kinds: String = context
        .eval("[typeof doc.id, typeof doc.big, doc.missing === null, doc.bytes instanceof Uint8Array, doc.shapes[2]].join()")
        .unwrap();
    assert_eq!(kinds, "number,bigint,true,true,Empty");
    assert_eq!(context.get_global::<Doc>("doc").unwrap(), doc);
}

#[test]
fn js_values_copy_out_with_their_types() {
    let (_isolate, context) = new_context();
    let v: Value = context
        .eval_with(
            "({ u: undefined, n: null, d: new Date(0), b: new Uint8Array([1, 2]), big: -(2n ** 130n), arr: [1, , 3], s: 'é' })",
            &EvalOptions::default().copy(),
        )
        .unwrap();
    let Value::Object(map) = v else { panic!("an object") };
    assert_eq!(map["u"], Value::Undefined);
    assert_eq!(map["n"], Value::Null);
    assert_eq!(map["d"], Value::Date(0.0));
    assert_eq!(map["b"], Value::Bytes(vec![1, 2]));
    assert_eq!(map["big"], Value::BigInt(BigInt::from_words(true, vec![0, 0, 4])));
    assert_eq!(map["big"].to_string(), "-1361129467683753853853498429727072845824");
    assert_eq!(map["arr"], Value::Array(vec![Value::Number(1.0), Value::Undefined, Value::Number(3.0)]));
    assert_eq!(map["s"], Value::String("é".into()));
}

#[test]
fn values_that_cannot_be_copied_give_a_clear_error() {
    let (_isolate, context) = new_context();
    let copy = EvalOptions::default().copy();
    for (code, what) in [
        // V8's DataCloneError messages, as isolated-vm users see them.
        ("({ f: function f() {} })", "function f() {} could not be cloned."),
        ("[Symbol('s')]", "Symbol(s) could not be cloned."),
        ("Promise.resolve(1)", "#<Promise> could not be cloned."),
        ("new WeakMap()", "#<WeakMap> could not be cloned."),
        ("new Proxy({}, {})", "#<Object> could not be cloned."),
    ] {
        let err = context.eval_with::<Value>(code, &copy).unwrap_err();
        assert_eq!(err.kind(), ivm::ErrorKind::Conversion, "{code}");
        assert_eq!(err.message(), what, "{code}");
    }
    let err = context.eval_with::<Value>("const a = {}; a.self = a; a", &copy).unwrap_err();
    assert_eq!(err.kind(), ivm::ErrorKind::Conversion);
    let err = context.eval::<u32>("'not a number'").unwrap_err();
    assert_eq!(err.kind(), ivm::ErrorKind::Conversion);
}

#[test]
fn getters_that_throw_while_copying_are_exceptions() {
    let (_isolate, context) = new_context();
    let err = context
        .eval_with::<Value>("({ get boom() { throw new RangeError('getter') } })", &EvalOptions::default().copy())
        .unwrap_err();
    assert_eq!((err.name(), err.message()), ("RangeError", "getter"));
}

#[test]
fn numbers_format_as_in_javascript() {
    let (_isolate, context) = new_context();
    for code in ["1e21", "1.5e-7", "0.1 + 0.2", "-0", "NaN", "-Infinity", "123456789012"] {
        let expected: String = context.eval(&format!("String({code})")).unwrap();
        let value: Value = context.eval(code).unwrap();
        assert_eq!(value.to_string(), expected, "{code}");
    }
}

#[test]
fn plain_data_and_every_value_kind_round_trip_exactly() {
    let (_isolate, context) = new_context();
    // JSON-shaped data (it takes V8's JSON parser on the way in).
    let doc = serde_json::json!({
        "text": "quote \" backslash \\ newline \n tab \t é 😀 \u{0}",
        "numbers": [0, -0.0, 1.5, -2, 9007199254740991i64, 1e300, 2.5e-308],
        "nested": { "b": [[], {}], "a": null, "10": true, "2": false },
    });
    context.set_global("doc", &doc).unwrap();
    assert!(context.eval::<bool>("Object.is(doc.numbers[1], -0)").unwrap());
    assert_eq!(context.eval::<String>("Object.keys(doc.nested).join()").unwrap(), "2,10,b,a");
    assert_eq!(context.get_global::<serde_json::Value>("doc").unwrap(), doc);
    // A `Value` of every kind (it takes V8's deserializer).
    let value = Value::Array(vec![
        Value::Undefined,
        Value::Null,
        Value::Bool(true),
        Value::Number(f64::NAN),
        Value::BigInt(BigInt::from(-12345678901234567890i128)),
        Value::String("s".into()),
        Value::Bytes(vec![0, 255]),
        Value::Date(1.5e12),
        Value::Map(vec![(Value::Number(1.0), Value::String("one".into()))]),
        Value::Set(vec![Value::String("x".into())]),
        Value::RegExp { source: "a|b".into(), flags: "gi".into() },
        Value::Error(Box::new(ivm::JsError { name: "TypeError".into(), message: "bad".into(), ..Default::default() })),
    ]);
    context.set_global("all", &value).unwrap();
    let kinds: String = context
        .eval("all.map(v => Object.prototype.toString.call(v).slice(8, -1)).join()")
        .unwrap();
    assert_eq!(kinds, "Undefined,Null,Boolean,Number,BigInt,String,Uint8Array,Date,Map,Set,RegExp,Error");
    let Value::Array(back) = context.get_global::<Value>("all").unwrap() else { panic!() };
    let Value::Array(sent) = &value else { unreachable!() };
    for (i, (got, want)) in back.iter().zip(sent).enumerate() {
        match (got, want) {
            (Value::Number(a), Value::Number(b)) if a.is_nan() && b.is_nan() => {}
            (Value::Error(a), Value::Error(b)) => assert_eq!((&a.name, &a.message), (&b.name, &b.message)),
            _ => assert_eq!(got, want, "item {i}"),
        }
    }
}

#[test]
fn deeply_nested_values_cross_on_a_small_stack() {
    // Nesting up to the bound (1000 levels) is copied out and back on a thread with a Rust
    // thread's default stack (2 MB; V8 itself wants about 1 MB): ivm's recursion moves to a
    // stack of its own when this one runs low, also in a debug build, where one level of it
    // takes 30 KB.
    let context = crate::new_context().1;
    let nested = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let value = context.eval::<ivm::Value>("let a = []; for (let i = 0; i < 990; i++) a = [a, new Set([i])]; a").map(|_| ());
            let copied = context.eval_with::<ivm::Value>("a", &ivm::EvalOptions::default().copy()).unwrap();
            let back: u32 = context.eval_closure("let n = 0; for (let a = $0; a.length; a = a[0]) n++; return n", (copied.clone(),), &Default::default()).unwrap();
            (value, back, serde_json::to_string(&copied.to_json()).unwrap().len())
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(nested.1, 990);
    assert!(nested.2 > 990);
}
