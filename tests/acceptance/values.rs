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
