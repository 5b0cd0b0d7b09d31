; Inno Setup 6 script: a per-user installer for dist\atelier (packaging\windows\atelier.spec).
;
;   iscc /DAppVersion=0.1.0 packaging\windows\atelier.iss     ->  dist\Atelier-0.1.0-setup.exe
;
; Per user: no administrator rights, installs to %LOCALAPPDATA%\Programs\Atelier.
; Start menu entry, optional desktop shortcut, an uninstaller in "Apps & features".
; The user's chats, settings and models (%LOCALAPPDATA%\Atelier, from platformdirs) are
; not touched by the uninstaller.
; The icon build\icons\atelier.ico is rendered from resources\icons\atelier.svg by
; `python packaging\render_icons.py build\icons --ico` (the spec does it when missing).

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#define AppName "Atelier"
#define AppExe "Atelier.exe"

[Setup]
AppId={{8C4A3E52-6F0B-4C6E-9A53-1D2E7B0F4A11}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=Atelier
AppComments=A private, offline generative-AI studio
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
DisableDirPage=auto
PrivilegesRequired=lowest
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputDir=..\..\dist
OutputBaseFilename={#AppName}-{#AppVersion}-setup
SetupIconFile=..\..\build\icons\atelier.ico
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName}
WizardStyle=modern
; The demo model (250 MB of quantized weights) barely compresses: fast LZMA2, not solid.
Compression=lzma2/fast
SolidCompression=no
CloseApplications=yes
RestartApplications=no

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "..\..\dist\atelier\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[InstallDelete]
; An update replaces the whole bundle, so no file of an older version lingers.
Type: filesandordirs; Name: "{app}\_internal"

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"; WorkingDir: "{app}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; WorkingDir: "{app}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
Type: filesandordirs; Name: "{app}\_internal"
