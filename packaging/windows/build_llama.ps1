# Build and install llama-cpp-python on Windows with runtime CPU dispatch:
# the PowerShell counterpart of packaging/llama/build_wheel.sh.
#
#   pwsh packaging/windows/build_llama.ps1 -Python .venv\Scripts\python.exe
#
# - GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS: one ggml-cpu-<level>.dll per instruction-set
#   level, the best one picked at run time (engines/llama/backends.py loads them). MSVC
#   builds no AMX variant (and no BF16 one), so nothing needs removing; AMX is off anyway.
# - GGML_OPENMP=OFF: MSVC's OpenMP runtime (vcomp140.dll) is not on every machine and
#   PyInstaller cannot see it behind the dynamically loaded variants; ggml's own thread
#   pool is used instead.
# - The wheel is cached under a key of version + flags + this script's revision, never
#   in pip's cache (which ignores CMAKE_ARGS).
param(
    [Parameter(Mandatory = $true)][string]$Python,
    [string]$Version = $(if ($env:LLAMA_CPP_PYTHON_VERSION) { $env:LLAMA_CPP_PYTHON_VERSION } else { "0.3.36" })
)
$ErrorActionPreference = "Stop"
$ScriptRevision = 1
$CMakeArgs = "-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON " +
        "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_OPENMP=OFF " +
        "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
if ($env:LLAMA_EXTRA_CMAKE_ARGS) { $CMakeArgs = "$CMakeArgs $env:LLAMA_EXTRA_CMAKE_ARGS" }
$PyVer = & $Python -c "import sys; print(sys.version_info[:2])"
$Sha = [System.Security.Cryptography.SHA256]::Create()
$KeyBytes = $Sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes("$Version|$CMakeArgs|$ScriptRevision|$PyVer|win"))
$Key = ([System.BitConverter]::ToString($KeyBytes) -replace "-", "").Substring(0, 16).ToLower()
$CacheRoot = if ($env:ATELIER_WHEEL_CACHE) { $env:ATELIER_WHEEL_CACHE } else { Join-Path $HOME ".cache\atelier-build\wheels" }
$Dest = Join-Path $CacheRoot "llama-cpp-python-$Version-$Key"

if (-not (Get-ChildItem -Path $Dest -Filter *.whl -ErrorAction SilentlyContinue)) {
    Write-Host "Building llama-cpp-python $Version with portable CPU dispatch..."
    $Work = Join-Path ([System.IO.Path]::GetTempPath()) ("llama-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Force -Path "$Work\src", "$Work\wheel", "$Work\unpacked", "$Work\repacked" | Out-Null
    & $Python -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$Version" -d "$Work\src"
    if ($LASTEXITCODE) { throw "pip download failed" }
    $env:CMAKE_ARGS = $CMakeArgs
    $env:CMAKE_BUILD_PARALLEL_LEVEL = "$env:NUMBER_OF_PROCESSORS"
    $Sdist = (Get-ChildItem "$Work\src\llama_cpp_python-*.tar.gz").FullName
    & $Python -m pip wheel --quiet --no-cache-dir --no-deps $Sdist -w "$Work\wheel"
    if ($LASTEXITCODE) { throw "building llama-cpp-python failed" }
    & $Python -m pip install --quiet wheel
    & $Python -m wheel unpack (Get-ChildItem "$Work\wheel\*.whl").FullName -d "$Work\unpacked"
    $Root = (Get-ChildItem -Directory "$Work\unpacked")[0].FullName
    $Lib = Join-Path $Root "llama_cpp\lib"
    # ggml installs its backend modules (the CPU variants) outside the package: move them
    # beside ggml.dll, where ggml_backend_load_all_from_path looks.
    Get-ChildItem -Path $Root -Recurse -Filter "ggml-*.dll" |
        Where-Object { $_.DirectoryName -ne $Lib -and $_.Name -notlike "ggml-base*" } |
        ForEach-Object { Move-Item -Force $_.FullName $Lib }
    foreach ($extra in "bin", "include", "lib") {
        $path = Join-Path $Root $extra
        if (Test-Path $path) { Remove-Item -Recurse -Force $path }
    }
    if (-not (Test-Path (Join-Path $Lib "ggml-cpu-haswell.dll"))) { throw "no CPU variants in $Lib" }
    Get-ChildItem $Lib -Filter "ggml-cpu-*.dll" | ForEach-Object { Write-Host "  variant: $($_.Name)" }
    & $Python -m wheel pack $Root -d "$Work\repacked"
    New-Item -ItemType Directory -Force -Path $Dest | Out-Null
    Copy-Item "$Work\repacked\*.whl" $Dest
    Remove-Item -Recurse -Force $Work
}

$Wheel = (Get-ChildItem "$Dest\*.whl")[0].FullName
& $Python -m pip install --quiet --no-deps --force-reinstall $Wheel
if ($LASTEXITCODE) { throw "installing the wheel failed" }
& $Python -m pip install --quiet "diskcache>=5.6.1" "jinja2>=2.11.3" "numpy>=1.20.0" "typing-extensions>=4.5.0"
Write-Host "llama-cpp-python $Version installed (build $Key)"
