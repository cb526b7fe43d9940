// Starts Swagger UI or ReDoc from the vendored bundles (static/vendor/): the docs work offline
// and the pages need no inline script, so script-src stays 'self'.
"use strict";
(function () {
  var swagger = document.getElementById("swagger-ui");
  var redoc = document.getElementById("redoc");
  if (swagger && window.SwaggerUIBundle) {
    window.SwaggerUIBundle({
      url: swagger.dataset.openapiUrl,
      dom_id: "#swagger-ui",
      layout: "BaseLayout",
      deepLinking: true,
      showExtensions: true,
      validatorUrl: null, // its badge is an image from validator.swagger.io
      presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset].filter(Boolean),
    });
  }
  if (redoc && window.Redoc) {
    // No web fonts: ReDoc's default Montserrat/Roboto would come from Google; system fonts instead.
    window.Redoc.init(
      redoc.dataset.openapiUrl,
      { theme: { typography: { fontFamily: "system-ui, sans-serif", headings: { fontFamily: "system-ui, sans-serif" } } } },
      redoc
    );
  }
})();
