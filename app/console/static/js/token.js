// The bearer token: in memory, and in sessionStorage so a reload in this tab keeps it (it is
// gone when the tab closes). Never put in a URL, never logged.

const KEY = 'modeledit.token';
let token = null;
try {
  token = sessionStorage.getItem(KEY);
} catch {
  token = null;  // storage disabled: memory only
}

export function getToken() {
  return token;
}

export function setToken(value) {
  token = value && value.trim() ? value.trim() : null;
  try {
    if (token) sessionStorage.setItem(KEY, token);
    else sessionStorage.removeItem(KEY);
  } catch {
    // memory only
  }
}
