// Tally checkout: reloads the page when the sale's state changes, so a payment that arrives
// shows without the buyer pressing "Check again". The page works without this script.
(function () {
  "use strict";
  var el = document.getElementById("sale-state");
  if (!el || !el.getAttribute("data-poll")) {
    return;
  }
  var url = el.getAttribute("data-poll");
  var state = el.getAttribute("data-state");
  function check() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (s && s.state !== state) {
          window.location.reload();
        } else {
          window.setTimeout(check, 5000);
        }
      })
      .catch(function () { window.setTimeout(check, 15000); });
  }
  window.setTimeout(check, 5000);
})();
