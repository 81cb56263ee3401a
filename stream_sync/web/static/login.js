// Sign-in: the API sets the session cookie; then on to where the user was going.
"use strict";

(() => {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  const submit = form.querySelector("button[type=submit]");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const email = form.email.value.trim();
    const password = form.password.value;
    if (!email || !password) {
      error.textContent = "Enter your email and password.";
      error.hidden = false;
      (email ? form.password : form.email).focus();
      return;
    }
    submit.disabled = true;
    try {
      await StreamSync.api("POST", "/api/auth/login", { email, password });
      location.assign(form.dataset.next || "/");
    } catch (e) {
      error.textContent = e.status === 401 ? "Wrong email or password." : e.message;
      error.hidden = false;
      form.password.select();
      form.password.focus();
    } finally {
      submit.disabled = false;
    }
  });
})();
