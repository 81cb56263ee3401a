// Shared by every page: the API client (CSRF header, JSON errors) and sign-out.
"use strict";

const StreamSync = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch {
      throw new ApiError(0, "network", "The server cannot be reached. Check your connection.");
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = data?.error ?? {};
      if (response.status === 401 && !location.pathname.startsWith("/login")) {
        location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
      }
      throw new ApiError(response.status, error.code ?? "error",
        error.message ?? `Request failed (${response.status}).`);
    }
    return data;
  }

  function showError(message) {
    const box = document.getElementById("page-error");
    if (!box) return;
    box.textContent = message;
    box.hidden = !message;
  }

  const number = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
  }

  document.getElementById("sign-out")?.addEventListener("click", async () => {
    try {
      await api("POST", "/api/auth/logout");
    } finally {
      location.assign("/login");
    }
  });

  return { api, ApiError, showError, number, duration };
})();
