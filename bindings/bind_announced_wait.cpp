// AnnouncedWait: the wait hooks' wrapper (src/corral/_wait_hooks.py), a C type rather than a Python
// function, so that a wrapped call looks to the program as the call it wraps:
//   - no frame of corral's in a traceback, inspect.stack() or the recursion count;
//   - a module's function (time.sleep, select.select) stays unbound when a class stores it
//     (`class Retry: sleep = time.sleep`), as a builtin does; a method (socket.socket.recv,
//     Thread.join) binds as the function it replaces;
//   - it passes for the original: __class__ is the original's (isinstance, inspect.isfunction and
//     isbuiltin, mock's autospec), every attribute but a few of its own is the original's
//     (__name__, __doc__, __code__, __text_signature__...), repr() is the original's, and pickle
//     finds it by name.
// Outside a corral task a call costs one thread-local read before the original's.
#include <Python.h>

#include <cstddef>
#include <optional>

#include "bindings.hpp"
#include "corral/permit_table.hpp"

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define CORRAL_T_PYSSIZET T_PYSSIZET
#define CORRAL_READONLY READONLY
#else
#define CORRAL_T_PYSSIZET Py_T_PYSSIZET
#define CORRAL_READONLY Py_READONLY
#endif

namespace corral::bindings {
namespace {

struct announced_wait {
  PyObject_HEAD vectorcallfunc vectorcall;
  PyObject* original;         // the call wrapped
  PyObject* should_announce;  // (*args, **kwargs) -> whether this call may wait; None: always
  PyObject* in_task;          // called instead inside a task (its own pause protocol); or None
  PyObject* weakrefs;
  int binds;  // a method: binds to the instance it is looked up on
};

PyObject* call_original(announced_wait* w, PyObject* const* args, size_t nargsf, PyObject* kw) {
  return PyObject_Vectorcall(w->original, args, nargsf, kw);
}

PyObject* announced_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kw) {
  auto* w = reinterpret_cast<announced_wait*>(self);
  if (!permit_pause::in_task()) return call_original(w, args, nargsf, kw);
  if (w->in_task != Py_None) return PyObject_Vectorcall(w->in_task, args, nargsf, kw);
  if (w->should_announce != Py_None) {
    PyObject* answer = PyObject_Vectorcall(w->should_announce, args, nargsf, kw);
    const int waits = answer == nullptr ? -1 : PyObject_IsTrue(answer);
    Py_XDECREF(answer);
    if (waits <= 0) {
      // Arguments it cannot judge (a wrong type, a wrong count): the original raises its own error.
      if (waits < 0) PyErr_Clear();
      return call_original(w, args, nargsf, kw);
    }
  }
  std::optional<permit_pause> pause(std::in_place);  // gives the permit back; never waits
  PyObject* result = call_original(w, args, nargsf, kw);
  PyThreadState* state = PyEval_SaveThread();  // an exception set stays this thread's meanwhile
  pause.reset();                               // takes a permit back: may wait; never throws
  take_gil_back(state);
  return result;
}

// AnnouncedWait(original, should_announce=None, in_task=None, binds=True): calls original; inside a
// corral task, with the task's permit given back meanwhile (when should_announce, given the same
// arguments, is true, or always); in_task, when given, is called instead inside a task. binds: a
// method. (No docstring of its own: __doc__ is the original's.)
PyObject* announced_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  static const char* names[] = {"original", "should_announce", "in_task", "binds", nullptr};
  PyObject* original = nullptr;
  PyObject* should_announce = Py_None;
  PyObject* in_task = Py_None;
  int binds = 1;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOp:AnnouncedWait", const_cast<char**>(names),
                                   &original, &should_announce, &in_task, &binds))
    return nullptr;
  auto* w = reinterpret_cast<announced_wait*>(type->tp_alloc(type, 0));
  if (w == nullptr) return nullptr;
  w->vectorcall = announced_call;
  w->original = Py_NewRef(original);
  w->should_announce = Py_NewRef(should_announce);
  w->in_task = Py_NewRef(in_task);
  w->weakrefs = nullptr;
  w->binds = binds;
  return reinterpret_cast<PyObject*>(w);
}

int announced_traverse(PyObject* self, visitproc visit, void* arg) {
  auto* w = reinterpret_cast<announced_wait*>(self);
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(w->original);
  Py_VISIT(w->should_announce);
  Py_VISIT(w->in_task);
  return 0;
}

int announced_clear(PyObject* self) {
  auto* w = reinterpret_cast<announced_wait*>(self);
  Py_CLEAR(w->original);
  Py_CLEAR(w->should_announce);
  Py_CLEAR(w->in_task);
  return 0;
}

void announced_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  if (reinterpret_cast<announced_wait*>(self)->weakrefs != nullptr) PyObject_ClearWeakRefs(self);
  announced_clear(self);
  type->tp_free(self);
  Py_DECREF(type);
}

PyObject* announced_get(PyObject* self, PyObject* instance, PyObject*) {
  if (instance == nullptr || instance == Py_None || !reinterpret_cast<announced_wait*>(self)->binds)
    return Py_NewRef(self);
  return PyMethod_New(self, instance);
}

// Its own: how it is called, bound and pickled, and the original itself. Everything else is the
// original's, read and written there.
bool own_attribute(PyObject* name) {
  for (const char* own : {"__call__", "__get__", "__reduce__", "__reduce_ex__"})
    if (PyUnicode_CompareWithASCIIString(name, own) == 0) return true;
  return false;
}

PyObject* announced_getattro(PyObject* self, PyObject* name) {
  auto* w = reinterpret_cast<announced_wait*>(self);
  if (PyUnicode_Check(name)) {
    if (PyUnicode_CompareWithASCIIString(name, "__corral_original__") == 0)
      return Py_NewRef(w->original);
    if (PyUnicode_CompareWithASCIIString(name, "__class__") == 0)
      return Py_NewRef(reinterpret_cast<PyObject*>(Py_TYPE(w->original)));
    if (own_attribute(name)) return PyObject_GenericGetAttr(self, name);
  }
  return PyObject_GetAttr(w->original, name);
}

int announced_setattro(PyObject* self, PyObject* name, PyObject* value) {
  return PyObject_SetAttr(reinterpret_cast<announced_wait*>(self)->original, name, value);
}

PyObject* announced_repr(PyObject* self) {
  return PyObject_Repr(reinterpret_cast<announced_wait*>(self)->original);
}

// pickle: by name, as a function or builtin is (the original's __qualname__, found where it is
// installed under the original's __module__).
PyObject* announced_reduce(PyObject* self, PyObject*) {
  return PyObject_GetAttrString(reinterpret_cast<announced_wait*>(self)->original, "__qualname__");
}

// A data descriptor on the type, so that object.__getattribute__ (pydoc's own-docstring test) finds
// the original's docstring too.
PyObject* announced_doc(PyObject* self, void*) {
  return PyObject_GetAttrString(reinterpret_cast<announced_wait*>(self)->original, "__doc__");
}

PyGetSetDef announced_getset[] = {
    {"__doc__", announced_doc, nullptr, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef announced_methods[] = {
    {"__reduce__", announced_reduce, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyMemberDef announced_members[] = {
    {"__vectorcalloffset__", CORRAL_T_PYSSIZET, offsetof(announced_wait, vectorcall),
     CORRAL_READONLY, nullptr},
    {"__weaklistoffset__", CORRAL_T_PYSSIZET, offsetof(announced_wait, weakrefs), CORRAL_READONLY,
     nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

PyType_Slot announced_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(announced_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(announced_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(announced_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(announced_clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(announced_get)},
    {Py_tp_repr, reinterpret_cast<void*>(announced_repr)},
    {Py_tp_methods, announced_methods},
    {Py_tp_members, announced_members},
    {Py_tp_getattro, reinterpret_cast<void*>(announced_getattro)},
    {Py_tp_setattro, reinterpret_cast<void*>(announced_setattro)},
    {Py_tp_getset, announced_getset},
    {0, nullptr},
};

PyType_Spec announced_spec = {"corral._core.AnnouncedWait", sizeof(announced_wait), 0,
                              Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
                              announced_slots};

}  // namespace

void bind_announced_wait(nb::module_& m) {
  PyObject* type = PyType_FromSpec(&announced_spec);
  if (type == nullptr) throw nb::python_error();
  m.attr("AnnouncedWait") = nb::steal(type);
}

}  // namespace corral::bindings
