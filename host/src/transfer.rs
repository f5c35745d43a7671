//! What can be put into an isolate: [`IntoJs`].

use std::sync::Arc;

use serde::Serialize;

use crate::callback::Callback;
use crate::error::Result;
use crate::isolate::IsolateInner;
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
}

/// Types that can be put into an isolate: anything `Serialize` (copied) and [`Callback`]s.
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
        }
    }
}
