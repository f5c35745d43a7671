//! What can be put into an isolate: [`IntoJs`].

use std::sync::Arc;

use serde::Serialize;

use crate::callback::Callback;
use crate::error::{Error, Result};
use crate::isolate::{IsolateInner, Slot};
use crate::reference::Reference;
use crate::value::{self, Value, js};

/// A value on its way into an isolate. Built outside the isolate (it is `Send`), made into a
/// JavaScript value inside it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Transferable {
    /// A copy of plain data.
    Value(Value),
    /// A host function.
    Callback(Callback),
    /// A value of the receiving isolate, passed as itself. Passing it into another isolate
    /// fails: its value does not leave its isolate.
    Reference(Reference),
}

/// Types that can be put into an isolate: anything `Serialize` (copied), [`Callback`]s, and
/// [`Reference`]s to values of that isolate.
pub trait IntoJs {
    /// Prepares the value for the isolate (serializes data).
    fn into_transferable(self) -> Result<Transferable>;
}

impl<T: Serialize> IntoJs for T {
    fn into_transferable(self) -> Result<Transferable> {
        Ok(Transferable::Value(value::to_value(&self)?))
    }
}

impl IntoJs for Callback {
    fn into_transferable(self) -> Result<Transferable> {
        Ok(Transferable::Callback(self))
    }
}

impl IntoJs for &Callback {
    fn into_transferable(self) -> Result<Transferable> {
        Ok(Transferable::Callback(self.clone()))
    }
}

impl IntoJs for Reference {
    fn into_transferable(self) -> Result<Transferable> {
        Ok(Transferable::Reference(self))
    }
}

impl IntoJs for &Reference {
    fn into_transferable(self) -> Result<Transferable> {
        Ok(Transferable::Reference(self.clone()))
    }
}

impl IntoJs for Transferable {
    fn into_transferable(self) -> Result<Transferable> {
        Ok(self)
    }
}

impl Transferable {
    /// Makes the JavaScript value in the current context of a locked isolate.
    pub(crate) fn to_js<'s>(
        &self,
        scope: &mut v8::PinScope<'s, '_>,
        inner: &Arc<IsolateInner>,
    ) -> Result<v8::Local<'s, v8::Value>> {
        match self {
            Transferable::Value(v) => js::copy_in(scope, v),
            Transferable::Callback(c) => c.to_js(scope, inner),
            Transferable::Reference(r) => {
                if !Arc::ptr_eq(&r.isolate().inner, inner) {
                    return Err(Error::js("TypeError", "Cannot dereference this into target isolate"));
                }
                inner
                    .local(scope, r.id(), |slot| match slot {
                        Slot::Reference { value, .. } => Some(value),
                        _ => None,
                    })
                    .ok_or_else(|| Error::disposed("Reference has been released"))
            }
        }
    }
}

/// Argument lists: tuples of [`IntoJs`] values (`()`, `(a,)`, `(a, b)`, ... up to 8) or a
/// `Vec<Transferable>`.
pub trait IntoArgs {
    /// Prepares the arguments for the isolate.
    fn into_args(self) -> Result<Vec<Transferable>>;
}

impl IntoArgs for Vec<Transferable> {
    fn into_args(self) -> Result<Vec<Transferable>> {
        Ok(self)
    }
}

macro_rules! tuple_args {
    ($($name:ident),*) => {
        impl<$($name: IntoJs),*> IntoArgs for ($($name,)*) {
            #[allow(non_snake_case)]
            fn into_args(self) -> Result<Vec<Transferable>> {
                let ($($name,)*) = self;
                Ok(vec![$($name.into_transferable()?),*])
            }
        }
    };
}

tuple_args!();
tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);
tuple_args!(A, B, C, D, E);
tuple_args!(A, B, C, D, E, F);
tuple_args!(A, B, C, D, E, F, G);
tuple_args!(A, B, C, D, E, F, G, H);
