// The admin overview: live pictures refreshed while the page is open.
// Each picture is asked for again every few seconds; the browser revalidates it with
// its ETag, so an unchanged picture costs a 304, and asking keeps new ones coming
// (the server renews the pictures of channels someone looks at more often).
"use strict";

(() => {
  const REFRESH_MS = 4000;
  const pictures = [...document.querySelectorAll("img[data-thumbnail]")];
  const shown = new Map(); // img -> ETag of the picture it shows

  for (const img of pictures) {
    img.addEventListener("error", () => { img.style.visibility = "hidden"; });
    img.addEventListener("load", () => { img.style.visibility = ""; });
  }

  async function refresh(img) {
    const response = await fetch(img.dataset.thumbnail, { cache: "no-cache" });
    if (!response.ok) return;
    const etag = response.headers.get("ETag");
    if (etag === shown.get(img)) return;
    const url = URL.createObjectURL(await response.blob());
    const old = img.src;
    img.src = url;
    shown.set(img, etag);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  }

  if (pictures.length) {
    setInterval(() => {
      if (document.hidden) return; // a background tab does not ask for fresh pictures
      for (const img of pictures) refresh(img).catch(() => {});
    }, REFRESH_MS);
  }
})();
